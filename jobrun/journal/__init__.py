"""Reading jobs' output back from the journal.

Every job unit runs with `LogNamespace=jobrun` and `LogExtraFields=JOBRUN_JOB=<id>`, stdout and
stderr going to journald as one stream. `JobOutput(job_id).records(...)` reads those records back:
an async iterator of `Record`s, from the first line (default), after a cursor, the last N, or since
a time; with `follow=True` it goes on until the job has ended *and* journald has written everything
the job wrote. The caller says when the job's unit has stopped by setting an `asyncio.Event`
(`ended=`).

The modules, one concern each:

- `records`: `Record`, `LineBreak` (what journald does to the job's bytes), cursors and positions;
- `reader`: the sd-journal handles (`JobJournal`: one job's records, read in batches);
- `watch`: the one inotify instance per namespace and event loop that wakes all followers;
- `streams`: journald's stream state files, which tell when a stopped unit's output is all written;
- `loss`: output the journal no longer has (deleted files) or never got (journald's rate limit);
- `follow`: the follower's loop; `output`: `JobOutput`, the public reader;
- `fanout`: one reader per followed job, shared by all of that job's followers.
"""

from __future__ import annotations

from .output import JobOutput
from .reader import JournalUnavailable
from .records import LineBreak, Record

__all__ = ["JobOutput", "JournalUnavailable", "LineBreak", "Record"]
