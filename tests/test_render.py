"""`jobrun status` prints without rich where rich would print plain text: byte for byte the same."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrun import render
from jobrun.model import Job, JobState, Outcome, Usage
from jobrun.wire.jobs import (
    job_from_dict,
    job_from_json,
    job_json,
    job_to_dict,
    jobs_from_json,
    jobs_json,
)

BASE: dict[str, Any] = {
    "id": "abc123defg",
    "name": None,
    "state": "succeeded",
    "signal": None,
    "exit_code": 0,
    "result": None,
    "reason": None,
    "command": ["sh", "-c", "echo hi"],
    "owner": "root",
    "uid": 0,
    "invocation_id": None,
    "unit": "jobrun-abc123defg.service",
    "created_at": "2026-11-29T06:00:00.123456+00:00",
    "started_at": "2026-11-29T06:00:01+00:00",
    "finished_at": "2026-11-29T06:00:02.5+00:00",
    "limits": {},
    "usage": None,
}

VARIANTS: list[dict[str, Any]] = [
    BASE,
    {**BASE, "name": "nightly", "limits": {"cpu_weight": 50, "memory_max": 1 << 30}},
    {**BASE, "state": "running", "exit_code": None, "finished_at": None,
     "usage": {"cpu_seconds": 1.5, "memory_bytes": 123456789, "tasks": 3,
               "io_read_bytes": None, "io_write_bytes": 4096}},
    {**BASE, "state": "failed", "exit_code": None, "signal": "SIGKILL", "reason": "killed"},
    {**BASE, "command": ["python3", "-c", "print('x' * 200)", *["arg"] * 20]},
    {**BASE, "command": ["echo", "[bold]not bold[/]"]},  # rich markup: rich decides
    {**BASE, "command": ["echo", ":smile: and a:b"]},  # emoji codes: rich decides
    {**BASE, "name": "ünïcode ✓"},
    {**BASE, "limits": {"writable": ["/srv/a", "/srv/b"]}},
]  # fmt: skip


def printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, d: dict[str, Any], plain: bool) -> str:
    """What status_table writes to a file (not a terminal), with or without the plain path."""
    if not plain:
        monkeypatch.setattr(render, "_print_plain", lambda rows: False)
    path = tmp_path / "out"
    with open(path, "w", encoding="utf-8") as f:
        monkeypatch.setattr(sys, "stdout", f)
        render.status_table(job_to_dict(job_from_dict(d)))
        monkeypatch.undo()
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("columns", ["20", "40", "41", "42", "43", "58", "80", "120", None])
@pytest.mark.parametrize("d", VARIANTS)
def test_plain_status_is_what_rich_prints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, d: dict[str, Any], columns: str | None
) -> None:
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ours = printed(monkeypatch, tmp_path, d, plain=True)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    theirs = printed(monkeypatch, tmp_path, d, plain=False)
    assert ours == theirs


def test_the_plain_path_is_taken_for_an_ordinary_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    with open(tmp_path / "out", "w") as f:
        monkeypatch.setattr(sys, "stdout", f)
        assert render._print_plain(render._status_rows(job_to_dict(job_from_dict(VARIANTS[2]))))
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # no file descriptor: rich decides
    assert not render._print_plain(render._status_rows(job_to_dict(job_from_dict(VARIANTS[2]))))


def every_kind_of_job() -> list[Job]:
    """Jobs in every state and ending, with no limits and with every setting, non-ASCII, long
    and multi-line commands and names, usage or none, times with and without microseconds."""
    from jobrun.properties import build_spec

    values: dict[str, Any] = {
        "cpu_weight": "50", "memory_high": "512M", "memory_max": "1G", "io_weight": "20",
        "tasks_max": "64", "cpu_quota": "150%", "cpu_affinity": "0,2-3", "network": True,
        "private_tmp": False, "env": ["A=héllo ✓", "B=2"], "workdir": "/tmp",
        "stop_timeout": "5.5", "profile": "relaxed", "writable": ["/tmp"],
    }  # fmt: skip
    specs = [
        build_spec(["true"]),
        build_spec(["sh", "-c", "line one\nline two"], name="nïght ✓ 漢字", **values),
        build_spec(["python3", "-c", "print('x' * 200)", *[f"--argument-{i}" for i in range(30)]]),
        build_spec(["echo", "[bold]x[/] :smile:"], name="n", cpu_weight="1"),
    ]
    t = datetime(2026, 11, 29, 6, 0, 0, 123456, tzinfo=UTC)
    outcomes = [
        Outcome(JobState.RUNNING),
        Outcome(JobState.SUCCEEDED, "success", 0, finished_at=t.replace(microsecond=0)),
        Outcome(JobState.FAILED, "exit-code", 3, reason="exited with status 3", finished_at=t),
        Outcome(JobState.FAILED, "signal", None, "SIGKILL", "killed by SIGKILL", finished_at=t),
        Outcome(JobState.STOPPED, "success", None, "SIGTERM", "stopped by jobrun", t),
    ]
    usages = [None, Usage(1.5, 123456789, 3, None, 4096), Usage()]
    return [
        Job(f"{n:010d}", spec, "alice" if n % 2 else "root", 1000 if n % 2 else 0, t,
            invocation_id="0123456789abcdef" if n % 3 else None,
            started_at=t if outcome.state != JobState.RUNNING or n % 2 else None,
            outcome=outcome, usage=usages[n % len(usages)])
        for n, (spec, outcome) in enumerate(
            (spec, outcome) for spec in specs for outcome in outcomes
        )
    ]  # fmt: skip


def test_the_wire_form_is_the_jobs_to_the_byte() -> None:
    """The CLI's fast path prints jobrund's JSON as it came (json.loads, json.dumps) and renders
    that dict; the typer app reads it into a Job (job_from_json) and prints job_to_dict of that:
    the same dict, and the same --json text, for every kind of job."""
    jobs = every_kind_of_job()
    for job in jobs:
        sent = job_json(job)  # what jobrund sends
        assert json.loads(sent) == job_to_dict(job_from_json(sent)), job
        assert json.dumps(json.loads(sent), indent=2) == job_json(job_from_json(sent), indent=2)
    sent = jobs_json(jobs)
    assert json.dumps(json.loads(sent), indent=2) == jobs_json(jobs_from_json(sent), indent=2)


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_every_kind_of_job_renders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, columns: str
) -> None:
    """Rendering needs nothing but the wire form (a job's state, ending, limits and usage)."""
    monkeypatch.setenv("COLUMNS", columns)
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    dicts = [json.loads(job_json(j)) for j in every_kind_of_job()]
    with open(tmp_path / "out", "w", encoding="utf-8") as f:
        monkeypatch.setattr(sys, "stdout", f)
        for d in dicts:
            render.status_table(d)
            render.status_table(d, wide=True)
        render.list_table(dicts)
        render.list_table(dicts, wide=True)
        monkeypatch.undo()
    out = (tmp_path / "out").read_text(encoding="utf-8")
    if columns != "200":
        return  # rich folds the values where they do not fit
    assert "exit 3" in out and "SIGKILL" in out and "stopped" in out and "cpu 1.50s" in out
    assert "memory_max=1073741824" in out and "nïght ✓ 漢字" in out


def _cells_one_by_one(text: str) -> int:
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _fit_one_by_one(text: str, width: int) -> str:
    text = " ".join(text.split("\n"))
    if _cells_one_by_one(text) <= width:
        return text
    out, used = [], 0
    for c in text:
        n = _cells_one_by_one(c)
        if used + n > width - 1:
            break
        out.append(c)
        used += n
    return "".join(out) + "…"


@pytest.mark.unit
@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.text(st.characters(max_codepoint=127)), st.text()),
    st.integers(min_value=0, max_value=40),
)
def test_cells_and_fit_count_every_character(text: str, width: int) -> None:
    """ASCII's shortcut (one cell each) gives what counting each character gives."""
    assert render.cells(text) == _cells_one_by_one(text)
    assert render.fit(text, width) == _fit_one_by_one(text, width)


@pytest.mark.unit
def test_the_fast_start_reads_the_id_of_every_reply() -> None:
    """fastcli.started_id reads Start's reply (job_json) without json: the same ID as json for
    every kind of job and any ID, and json's answer for a reply of another shape."""
    from dataclasses import replace

    from jobrun.fastcli import started_id
    from jobrun.model import new_job_id

    for job in every_kind_of_job():
        for job_id in (new_job_id(), "0000000000", "zzzzzzzzzz", job.id):
            reply = job_json(replace(job, id=job_id))
            assert started_id(reply) == json.loads(reply)["id"] == job_id
    # Other shapes (indented, another order, an ID of another form): json decides.
    assert started_id(job_json(every_kind_of_job()[0], indent=2)) == "0000000000"
    assert started_id('{"name": null, "id": "abcdefghij"}') == "abcdefghij"
    assert started_id('{"id": "ABCDEFGHIJ", "name": null}') == "ABCDEFGHIJ"
    assert started_id('{"id": "abcdefghijk", "name": null}') == "abcdefghijk"


# JSON as jobrund sends it and beyond: any value, indented or not, ASCII-escaped or not.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _json_outcome(loads: Any, text: str) -> tuple[str, str]:
    try:
        return "value", json.dumps(loads(text), allow_nan=True)  # NaN == NaN as text
    except Exception as e:
        return type(e).__name__, str(e)


@pytest.mark.unit
@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.lists(JSON_VALUES), st.dictionaries(st.text(), JSON_VALUES), JSON_VALUES),
    st.sampled_from([None, 2]),
    st.booleans(),
    st.sampled_from(["", " ", "\n", "x", "]", "}", ","]),
)
def test_the_fast_paths_json_is_jsons(
    value: Any, indent: int | None, ascii_: bool, tail: str
) -> None:
    """fastcli.json_loads (json's C scanner, without importing json) decodes what json.loads
    decodes, to the same value, and raises what it raises for the rest."""
    from jobrun.fastcli import json_loads

    text = json.dumps(value, indent=indent, ensure_ascii=ascii_)
    for t in (text, text + tail, tail + text, text[: len(text) // 2]):
        assert _json_outcome(json_loads, t) == _json_outcome(json.loads, t), t


@pytest.mark.unit
def test_the_fast_paths_json_reads_every_kind_of_job() -> None:
    from jobrun.fastcli import json_loads

    jobs = every_kind_of_job()
    for text in [job_json(job) for job in jobs] + [jobs_json(jobs)]:
        assert json_loads(text) == json.loads(text)
    for constant in ("[NaN]", "[Infinity, -Infinity]", '{"a": NaN}'):
        assert _json_outcome(json_loads, constant) == _json_outcome(json.loads, constant)


@pytest.mark.unit
@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text("0123456789-T:.+ xZ", max_size=30),
        st.datetimes().map(lambda d: d.isoformat()),
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        # one character of a timestamp changed: each place's check counts
        st.tuples(
            st.datetimes().map(lambda d: d.isoformat()),
            st.integers(min_value=0, max_value=25),
            st.sampled_from("0-T:.+ xZ"),
        ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]),
        # a timestamp cut short
        st.tuples(st.datetimes().map(lambda d: d.isoformat()), st.integers(0, 26)).map(
            lambda t: t[0][: t[1]]
        ),
    )
)
def test_timestamps_are_told_as_the_regex_told_them(text: str) -> None:
    """render's plain path tells a timestamp (no emoji code in it) without `re`: as the regex it
    replaced, for ASCII text (the only text it looks at)."""
    import re

    assert text.isascii()
    regex = re.compile(r"\d{4}-\d\d-\d\dT[\d:.+\-]+")
    assert render._timestamp(text) == bool(regex.fullmatch(text))
