"""usage.py on made-up cgroup trees (v2 and hybrid), rates, and metrics.py's text format.

`check_exposition` is a strict reader of Prometheus' text format (0.0.4) for the tests: every
sample in a family declared once by HELP and TYPE, label values with only the format's escapes,
no series twice, numbers that parse.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from jobrun import metrics
from jobrun.config import Config
from jobrun.errors import InvalidArgument
from jobrun.usage import Layout, Sample, rates, samples

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_PAIR = rf"[a-zA-Z_][a-zA-Z0-9_]*={_VALUE}"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_PAIR})(?:,{_PAIR})*)?\}})? (\S+)$")
_LABEL = re.compile(rf"([a-zA-Z_][a-zA-Z0-9_]*)=({_VALUE})")


def check_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The families of an exposition, {name: [(labels, value)]}; AssertionError if malformed."""
    assert text.endswith("\n") and "\r" not in text
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    helped: set[str] = set()
    typed: dict[str, str] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(_NAME, name) and name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in typed, line
            assert kind in ("counter", "gauge"), line
            typed[name] = kind
            families[name] = []
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels_text, value = m.groups()
            assert name in typed, f"sample before its TYPE: {line!r}"
            assert list(families)[-1] == name, f"family {name} split: {line!r}"
            labels: dict[str, str] = {}
            for k, v in _LABEL.findall(labels_text or ""):
                assert k not in labels
                raw = v[1:-1]
                labels[k] = re.sub(r"\\(.)", lambda e: "\n" if e[1] == "n" else e[1], raw)
            key = (name, tuple(sorted(labels.items())))
            assert key not in seen, f"series twice: {line!r}"
            seen.add(key)
            number = float(value)
            assert not math.isnan(number)
            if typed[name] == "counter":
                assert name.endswith("_total") and number >= 0
            families[name].append((labels, number))
    return families


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


JOB = "jobrun.slice/jobrun-u1000.slice/jobrun-abcdef0123.service"


def test_v2_counters_and_only_visible_jobs(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "cgroup.controllers": "cpu io memory pids",
        f"{JOB}/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n",
        f"{JOB}/memory.current": "1048576\n",
        f"{JOB}/memory.max": "max\n",
        f"{JOB}/pids.current": "3\n",
        f"{JOB}/io.stat": "8:0 rbytes=100 wbytes=20 rios=1\n8:16 rbytes=5 wbytes=1\n",
        f"{JOB}/cgroup.events": "populated 1\nfrozen 1\n",
        "jobrun.slice/jobrun-u1001.slice/jobrun-zzzzzzzzzz.service/cpu.stat": "usage_usec 1\n",
        "jobrun.slice/jobrun-u1001.slice/jobrun-NOT..ID.service/cpu.stat": "usage_usec 1\n",
    })  # fmt: skip
    where = Layout(tmp_path)
    assert set(where.job_dirs()) == {"abcdef0123", "zzzzzzzzzz"}  # a bad name is no job
    asked: list[list[str]] = []

    def visible(ids: list[str]) -> dict[str, str]:
        asked.append(ids)
        return {"abcdef0123": "alice"}

    (s,) = samples(visible, where)
    assert asked == [["abcdef0123", "zzzzzzzzzz"]]
    assert (s.id, s.user, s.state, s.group) == (
        "abcdef0123",
        "alice",
        "paused",
        "jobrun-u1000.slice",
    )
    assert (s.cpu_seconds, s.memory_bytes, s.memory_max, s.tasks) == (2.5, 1048576, None, 3)
    assert (s.io_read_bytes, s.io_write_bytes) == (105, 21)


def test_hybrid_counters_have_no_io(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "unified/cgroup.procs": "",
        "unified/cgroup.controllers": "",
        f"unified/{JOB}/cpu.stat": "usage_usec 1000000\n",
        f"unified/{JOB}/cgroup.events": "populated 1\nfrozen 0\n",
        f"memory/{JOB}/memory.usage_in_bytes": "4096\n",
        f"memory/{JOB}/memory.limit_in_bytes": "209715200\n",
        f"pids/{JOB}/pids.current": "1\n",
        f"blkio/{JOB}/blkio.throttle.io_service_bytes_recursive": "Total 0\n",
    })  # fmt: skip
    (s,) = samples(lambda ids: dict.fromkeys(ids, "alice"), Layout(tmp_path))
    assert s.state == "running" and s.cpu_seconds == 1.0
    assert (s.memory_bytes, s.memory_max, s.tasks) == (4096, 209715200, 1)
    assert s.io_read_bytes is None and s.io_write_bytes is None
    (tmp_path / f"memory/{JOB}/memory.limit_in_bytes").write_text("9223372036854771712\n")
    (s,) = samples(lambda ids: dict.fromkeys(ids, "alice"), Layout(tmp_path))
    assert s.memory_max is None


def test_rates() -> None:
    a = Sample("a", "u", "running", 10.0, cpu_seconds=1.0, io_read_bytes=0, io_write_bytes=None)
    b = Sample("a", "u", "running", 12.0, cpu_seconds=2.5, io_read_bytes=4096, io_write_bytes=1)
    r = rates(a, b)
    assert r.cpu_percent == pytest.approx(75.0)
    assert r.io_read_rate == pytest.approx(2048.0) and r.io_write_rate is None
    assert rates(None, b).cpu_percent is None
    assert rates(b, a).cpu_percent is None  # not a later sample


def test_metrics_text_is_valid_and_hostile_names_stay_inside_their_quotes() -> None:
    hostile = 'remote:x"} 1\njobrun_jobs{state="running"} 999\r\x00\\'
    ss = [
        Sample("aaaaaaaaaa", "alice", "running", 1.0, cpu_seconds=1.5, memory_bytes=10, tasks=2),
        Sample("bbbbbbbbbb", hostile, "paused", 1.0, cpu_seconds=0.5, memory_bytes=5,
               memory_max=100, io_read_bytes=7, io_write_bytes=8),
    ]  # fmt: skip
    text = metrics.render(ss, {"succeeded": 4, "failed": 1, "": 2})
    fam = check_exposition(text)
    assert dict((lb["state"], v) for lb, v in fam["jobrun_jobs"]) == {
        "running": 1, "paused": 1, "succeeded": 4, "failed": 1, "stopped": 0,
    }  # fmt: skip
    cpu = {lb["job"]: (lb["user"], v) for lb, v in fam["jobrun_job_cpu_seconds_total"]}
    assert cpu["aaaaaaaaaa"] == ("alice", 1.5)
    user, value = cpu["bbbbbbbbbb"]
    assert value == 0.5 and "\n" in user and "\r" not in user and "\x00" not in user
    assert [v for lb, v in fam["jobrun_user_cpu_seconds"] if lb["user"] == "alice"] == [1.5]
    assert [lb["job"] for lb, _ in fam["jobrun_job_memory_max_bytes"]] == ["bbbbbbbbbb"]
    assert len(fam["jobrun_jobs"]) == 5  # the hostile name added no sample


def test_write_atomically(tmp_path: Path) -> None:
    path = metrics.write_atomically(tmp_path, "a 1\n")
    assert path.read_text() == "a 1\n" and path.stat().st_mode & 0o777 == 0o644
    metrics.write_atomically(tmp_path, "a 2\n")
    assert [p.name for p in tmp_path.iterdir()] == ["jobrun.prom"]


def test_metrics_config(tmp_path: Path) -> None:
    conf = tmp_path / "jobrund.toml"
    assert Config.load(conf).metrics is None
    conf.write_text("[metrics]\nenabled = false\n")
    assert Config.load(conf).metrics is None
    conf.write_text('[metrics]\nenabled = true\npath = "/srv/m/"\ninterval = 2\n')
    m = Config.load(conf).metrics
    assert m is not None and (m.path, m.interval) == ("/srv/m", 2.0)
    for bad in ('enabled = "yes"', 'path = "rel"', "interval = 0", "interval = true",
                'path = "/a\\nb"', "colour = 1"):  # fmt: skip
        conf.write_text(f"[metrics]\nenabled = true\n{bad}\n")
        with pytest.raises(InvalidArgument):
            Config.load(conf)
