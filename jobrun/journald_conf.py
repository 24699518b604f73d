"""The journald of jobrun's journal namespace must not rate-limit job output.

journald drops the lines of a unit that writes more than RateLimitBurst= messages per
RateLimitIntervalSec= (defaults 10,000 per 30 s, times a factor for free disk space: 37,500 of a
200,000-line job were kept on a test host), and a unit cannot lift that limit for itself
(`LogRateLimitIntervalSec=0` means "journald's default"). Only the namespace's journald
configuration can, and its journald reads nothing else: /etc/systemd/journald@jobrun.conf and
drop-ins journald@jobrun.conf.d/*.conf (not journald.conf).

The package installs that file. A pip install has no such step, so before it starts a job
in-process as root, jobrun checks the configuration journald will read (`effective`), installs
its own file where none is (`ensure`) and restarts the namespace's journald if it runs; where it
cannot, it refuses to start the job and says what to do. It never rewrites a file someone else
put there: one that sets a rate limit is a refusal that names it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import PermissionDenied
from .model import LOG_NAMESPACE

__all__ = ["MAIN_CONF", "RateLimit", "effective", "ensure", "packaged_text"]

log = logging.getLogger(__name__)

MAIN_CONF = Path(f"/etc/systemd/journald@{LOG_NAMESPACE}.conf")
# systemd 252's CONF_PATHS("systemd/journald@NS.conf.d"), highest priority first.
DROPIN_DIRS = tuple(
    Path(d, f"journald@{LOG_NAMESPACE}.conf.d")
    for d in ("/etc/systemd", "/run/systemd", "/usr/local/lib/systemd", "/usr/lib/systemd")
)
SERVICE = f"systemd-journald@{LOG_NAMESPACE}.service"
# journald.conf(5) defaults (journald-server.c DEFAULT_RATE_LIMIT_*).
_DEFAULT_INTERVAL = "30s"
_DEFAULT_BURST = "10000"
_ZERO = re.compile(r"0+(?:\.0*)?\s*(?:us|usec|ms|msec|s|sec|seconds?|m|min|minutes?|h|hr|hours?)?")
_KEYS = {
    "RateLimitIntervalSec": "interval",
    "RateLimitInterval": "interval",  # the older name, still read
    "RateLimitBurst": "burst",
}

_checked = False  # once per process: the answer does not change while we run


@dataclass(frozen=True)
class RateLimit:
    """What journald of the namespace will read: the settings and the file each came from."""

    interval: str
    burst: str
    sources: tuple[Path, ...]  # the files read, in order (may be empty)
    set_by: Path | None  # the last file that set either value (None: defaults)

    @property
    def off(self) -> bool:
        # journald_ratelimit_test: `if (rl_interval == 0 || rl_burst == 0) return 1;`
        return bool(_ZERO.fullmatch(self.interval) or _ZERO.fullmatch(self.burst.strip()))

    def describe(self) -> str:
        where = str(self.set_by) if self.set_by else "journald's defaults (no file sets them)"
        return f"RateLimitIntervalSec={self.interval}, RateLimitBurst={self.burst} ({where})"


def _files() -> list[Path]:
    """The files journald@jobrun reads, in order: the main file, then the drop-ins by name (a
    name in a higher-priority directory hides the same name further down; /dev/null masks)."""
    found: list[Path] = [MAIN_CONF] if MAIN_CONF.is_file() else []
    dropins: dict[str, Path] = {}
    for d in DROPIN_DIRS:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in dropins:
                dropins[name] = d / name
    for name in sorted(dropins):
        p = dropins[name]
        if p.resolve() != Path("/dev/null"):
            found.append(p)
    return found


def effective() -> RateLimit:
    interval, burst, set_by = _DEFAULT_INTERVAL, _DEFAULT_BURST, None
    files = _files()
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, value = line.partition("=")
            if not sep or section != "Journal" or key.strip() not in _KEYS:
                continue
            value = value.strip()
            if _KEYS[key.strip()] == "interval":
                interval = value or _DEFAULT_INTERVAL  # an empty value resets to the default
            else:
                burst = value or _DEFAULT_BURST
            set_by = path
    return RateLimit(interval, burst, tuple(files), set_by)


def packaged_text() -> str:
    """jobrun's own journald@jobrun.conf (package data; units/ in the source tree)."""
    return resources.files("jobrun").joinpath("journald@jobrun.conf").read_text()


def _fix() -> str:
    return (
        f"as root, install jobrun's journald@jobrun.conf as {MAIN_CONF} (it sets "
        f"RateLimitIntervalSec=0; `jobrun` run as root does this itself where {MAIN_CONF} is "
        f"missing), then: systemctl try-restart {SERVICE}"
    )


def ensure() -> Path | None:
    """Make sure journald of the namespace has no rate limit before a job starts in-process.

    Returns the file written (logged once as a warning, which the CLI shows on stderr), or None
    when nothing had to change. Raises PermissionDenied, naming the fix, where the limit is on
    and jobrun cannot or must not change that (not root, read-only /etc, an existing file)."""
    global _checked
    if _checked:
        return None
    limit = effective()
    if limit.off:
        _checked = True
        return None
    why = (
        f"journald of the {LOG_NAMESPACE} journal namespace has a rate limit "
        f"({limit.describe()}): it would drop lines of a job that writes fast"
    )
    if limit.set_by is not None or MAIN_CONF.exists():
        raise PermissionDenied(
            f"{why}; jobrun does not rewrite a file it did not install",
            f"set RateLimitIntervalSec=0 in {limit.set_by or MAIN_CONF}, then: "
            f"systemctl try-restart {SERVICE}",
        )
    if os.geteuid() != 0:
        raise PermissionDenied(why, _fix())
    try:
        MAIN_CONF.parent.mkdir(parents=True, exist_ok=True)
        tmp = MAIN_CONF.with_name(f".{MAIN_CONF.name}.{os.getpid()}")
        tmp.write_text(packaged_text())
        os.chmod(tmp, 0o644)
        os.replace(tmp, MAIN_CONF)
    except OSError as e:
        raise PermissionDenied(f"{why}, and jobrun cannot write {MAIN_CONF}: {e}", _fix()) from e
    if not effective().off:  # a drop-in with a limit overrides the main file
        raise PermissionDenied(
            f"{why}; {MAIN_CONF} now turns it off, but a drop-in sets it again "
            f"({effective().describe()})",
            f"remove or change that drop-in, then: systemctl try-restart {SERVICE}",
        )
    # journald reads its configuration when it starts: restart it if it runs (its stdout
    # streams survive, held in its file descriptor store), or leave it to start on demand.
    try:
        subprocess.run(
            ["systemctl", "try-restart", SERVICE],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        raise PermissionDenied(
            f"wrote {MAIN_CONF}, but could not restart {SERVICE}: "
            f"{detail.decode(errors='replace').strip() or e}",
            f"systemctl restart {SERVICE}",
        ) from e
    _checked = True
    log.warning(
        "configured the %s journal namespace without a rate limit: %s", LOG_NAMESPACE, MAIN_CONF
    )
    return MAIN_CONF
