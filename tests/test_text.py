"""Any text works: non-ASCII in every argument, on Debian 12's dbus-fast 1.84 and PyPI's; bytes
that are not UTF-8 are a clear error; a bug is one line and exit 70, never a traceback.

.ci/run runs this file on Debian's libraries too: 1.84 is the one that wrote string lengths in
characters, not bytes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, Variant
from dbus_fast._private.unmarshaller import Unmarshaller
from dbus_fast.aio import message_bus as aio
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrun import bus, doctor

from .helpers import as_user, daemon_env, jobrun, jobrun_cmd, start_as, status_as, wait_for
from .test_daemon import _call_as

TEXT = "héllo wörld ✓"
NAME = "bâtiment ✓ 名前"
VALUE = "värde ✓ ключ"

# Message(destination="org.jobrun.Manager1", path="/org/jobrun/Manager1",
#   interface="org.jobrun.Manager1", member="Start", serial=7, signature="sasa{sv}(so)v",
#   body=BODY) as PyPI's dbus-fast 5.2.0 writes it; dbus-daemon accepts it. Non-ASCII in a
# string, an array of strings, a dict key, a variant holding an array of structs, a struct and a
# variant in a variant.
BODY: list[Any] = [
    "héllo wörld ✓",
    ["ä", "b", "✓✓"],
    {"ключ": Variant("as", ["ü", ""]), "E": Variant("a(ss)", [["K", "värde"]])},
    ["名前", "/o/p"],
    Variant("v", Variant("s", "ø")),
]
REFERENCE = (
    b"l\x01\x00\x01\xbb\x00\x00\x00\x07\x00\x00\x00\x83\x00\x00\x00\x01\x01o\x00\x14\x00\x00\x00"
    b"/org/jobrun/Manager1\x00\x00\x00\x00\x02\x01s\x00\x13\x00\x00\x00org.jobrun.Manager1\x00"
    b"\x00\x00\x00\x00\x03\x01s\x00\x05\x00\x00\x00Start\x00\x00\x00\x06\x01s\x00\x13\x00\x00\x00"
    b"org.jobrun.Manager1\x00\x00\x00\x00\x00\x08\x01g\x00\rsasa{sv}(so)v\x00\x00\x00\x00\x00\x00"
    b"\x11\x00\x00\x00h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93\x00\x00\x00\x1b\x00\x00\x00\x02\x00"
    b"\x00\x00\xc3\xa4\x00\x00\x01\x00\x00\x00b\x00\x00\x00\x06\x00\x00\x00\xe2\x9c\x93\xe2\x9c"
    b"\x93\x00\x00S\x00\x00\x00\x00\x00\x00\x00\x08\x00\x00\x00\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"
    b"\x00\x02as\x00\x00\x00\x00\r\x00\x00\x00\x02\x00\x00\x00\xc3\xbc\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x01\x00\x00\x00E\x00\x05a(ss)\x00\x00\x00\x00\x13\x00\x00\x00\x00\x00\x00\x00"
    b"\x01\x00\x00\x00K\x00\x00\x00\x06\x00\x00\x00v\xc3\xa4rde\x00\x00\x00\x00\x00\x00\x06\x00"
    b"\x00\x00\xe5\x90\x8d\xe5\x89\x8d\x00\x00\x04\x00\x00\x00/o/p\x00\x01v\x00\x01s\x00\x00\x02"
    b"\x00\x00\x00\xc3\xb8\x00"
)


def message(signature: str, body: list[Any], serial: int = 7) -> Message:
    return Message(
        destination="org.jobrun.Manager1",
        path="/org/jobrun/Manager1",
        interface="org.jobrun.Manager1",
        member="Start",
        serial=serial,
        signature=signature,
        body=body,
    )


def sent(msg: Message) -> bytes:
    """The bytes jobrun's bus connection queues for the socket (bus.py's patches applied)."""
    writer = aio._MessageWriter.__new__(aio._MessageWriter)
    writer.messages = deque()
    writer.negotiate_unix_fd = True
    writer.buffer_message(msg)
    return bytes(writer.messages[-1][0])


def plain(value: Any) -> Any:
    """A body with structs as lists (dbus-fast 5 reads them as tuples, 1.84 as lists)."""
    if isinstance(value, Variant):
        return ("variant", value.signature, plain(value.value))
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def read_back(data: bytes) -> Message:
    msg = Unmarshaller(io.BytesIO(data)).unmarshall()  # type: ignore[arg-type]
    assert msg is not None
    return msg


def test_non_ascii_strings_are_sent_as_the_dbus_specification_says() -> None:
    assert sent(message("sasa{sv}(so)v", BODY)) == REFERENCE
    assert sent(message("s", ["é"]))[-7:] == b"\x02\x00\x00\x00\xc3\xa9\x00"


def test_non_ascii_strings_are_read_back_exactly() -> None:
    msg = read_back(REFERENCE)
    assert msg.signature == "sasa{sv}(so)v" and msg.member == "Start"
    assert plain(msg.body) == plain(BODY)


_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    s=_text,
    strings=st.lists(_text, max_size=4),
    table=st.dictionaries(_text, _text, max_size=3),
    pair=st.tuples(_text, st.integers(0, 2**32 - 1)),
    data=st.binary(max_size=9),
    inner=_text,
)
def test_any_text_round_trips_and_equals_the_reference_marshaller(
    s: str, strings: list[str], table: dict[str, str], pair: tuple[str, int], data: bytes,
    inner: str,
) -> None:  # fmt: skip
    body = [s, strings, {k: Variant("s", v) for k, v in table.items()}, list(pair), data,
            Variant("as", [inner]), True, "/path", "a{sv}"]  # fmt: skip
    msg = message("sasa{sv}(su)ayvbog", body)
    out = sent(msg)
    # On a dbus-fast that marshals right (PyPI's) this compares bus.marshall with it.
    assert out == bytes(bus.marshall(msg, True))
    assert plain(read_back(out).body) == plain(body)


def test_the_fix_is_applied_only_where_the_library_is_wrong() -> None:
    library = bytes(Message(path="/p", member="M", signature="s", body=["é"])._marshall(False))
    right = library.endswith(b"\x02\x00\x00\x00\xc3\xa9\x00")
    assert bus._marshalls_utf8_right() is right
    patched = aio._MessageWriter.buffer_message is bus._buffer_message_utf8
    assert patched is not right


# -- the command line ----------------------------------------------------------------------


def cli_bytes(
    *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobrun", *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        env={**os.environ, "JOBRUN_MODE": "local", **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--", "echo", b"caf\xe9"],
        ["start", "-E", b"K=\xff", "--", "true"],
        ["start", "--name", b"n\xff\xfe", "--", "true"],
        ["status", b"\xffabc"],
        ["logs", b"\xff"],
    ],
)
def test_argument_not_utf8_is_a_clear_error_and_exit_2(args: list[str | bytes]) -> None:
    proc = cli_bytes(*args, env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent"})
    assert proc.returncode == 2, proc.stderr
    bad = next(a for a in args if isinstance(a, bytes))
    assert f"argument {args.index(bad) + 1} ({bad!r}) is not valid UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


BOOM = """
import sys
from jobrun import cli

def boom(*args, **kwargs):
    raise KeyError("boom\\nsecond line")

setattr(sys.modules[sys.argv[1]], sys.argv[2], boom)
sys.argv[:3] = ["jobrun"]
cli.main()
"""


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("jobrun.cli.common", "open_backend", ["list"]),  # inside a command's event loop
        ("jobrun.cli.logs", "parse_since", ["logs", "--since", "5min", "abc"]),  # outside it
        ("jobrun.cli.settings", "build_spec", ["start", "--", "true"]),  # while parsing
    ],
)
def test_a_bug_is_one_line_and_exit_70_with_details_in_a_file(
    module: str, name: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "JOBRUN_MODE": "local"}
    env.pop("JOBRUN_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", BOOM, module, name, *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 70, proc.stderr
    log = tmp_path / "jobrun" / "internal-errors.log"
    assert proc.stderr == (
        f"jobrun: internal error: KeyError: 'boom\\nsecond line'; details in {log} — "
        "please report it\n"
    )
    details = log.read_text()
    assert "Traceback (most recent call last)" in details and "KeyError: 'boom" in details
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    check = doctor.internal_errors_check()
    assert check.ok is None and "1 recorded" in check.detail and "KeyError" in check.detail


def test_doctor_says_none_when_there_was_no_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert doctor.internal_errors_check().ok is True


def test_a_bug_whose_details_cannot_be_saved_is_still_one_line(tmp_path: Path) -> None:
    (tmp_path / "jobrun").write_text("a file where the directory would be")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "JOBRUN_MODE": "local"}
    env.pop("JOBRUN_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", BOOM, "jobrun.cli.common", "open_backend", "list"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 70
    assert proc.stderr.count("\n") == 1 and "could not be saved" in proc.stderr, proc.stderr


LOST = """
import sys
from jobrun import cli
from jobrun.cli import common

async def lost():
    # as dbus-fast leaves it: the reader's error also set on a future nobody awaits
    import asyncio
    orphan = asyncio.get_running_loop().create_future()
    orphan.set_exception(EOFError())
    del orphan
    raise {}("connection reset")

common.open_backend = lost
sys.argv[:1] = ["jobrun"]
cli.main()
"""


@pytest.mark.parametrize("exc", ["EOFError", "ConnectionResetError"])
def test_lost_bus_connection_is_unavailable_exit_69(exc: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LOST.format(exc), "status", "abc"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 69, proc.stderr
    assert proc.stderr.startswith("jobrun: lost the connection to the system bus"), proc.stderr
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr
    assert proc.stderr.count("\n") == 2  # the error and its hint
    details = (tmp_path / "jobrun" / "internal-errors.log").read_text()
    assert "Future exception was never retrieved" in details and "EOFError" in details


# -- through systemd and jobrund -------------------------------------------------------------


def started_id(stderr: str) -> str:
    m = re.search(r"jobrun: job (\w+) started", stderr)
    assert m, stderr
    return m.group(1)


def check_shown_back(job: str, command: list[str], output: str, cli: Any) -> None:
    """status, list and logs give back exactly what went in."""
    data = json.loads(cli("status", job, "--json").stdout)
    assert data["name"] == NAME and data["command"] == command, data
    table = cli("status", job)
    assert table.returncode == 0 and NAME in table.stdout, table.stdout + table.stderr
    rows = json.loads(cli("list", "--json", "--all").stdout)
    row = next(r for r in rows if r["id"] == job)
    assert row["name"] == NAME and row["command"] == command
    assert cli("logs", job).stdout == output


SCRIPT = 'printf "%s|%s|%s\\n" "$1" "$K" "$(pwd)"'


@pytest.mark.integration
@pytest.mark.usefixtures("state_dir")
def test_non_ascii_everywhere_in_process(tmp_path: Path) -> None:
    proc = jobrun("run", "--", "echo", TEXT)
    assert (proc.returncode, proc.stdout) == (0, TEXT + "\n"), proc.stderr
    assert "Traceback" not in proc.stderr

    workdir = tmp_path / "dïr ✓"
    workdir.mkdir()
    command = ["sh", "-c", SCRIPT, "sh", TEXT]
    proc = jobrun(
        "run", "--name", NAME, "-E", f"K={VALUE}", "-C", str(workdir), "--shared-tmp",
        "--profile", "relaxed", "--", *command,
    )  # fmt: skip
    expected = f"{TEXT}|{VALUE}|{workdir}\n"
    assert (proc.returncode, proc.stdout) == (0, expected), proc.stderr
    check_shown_back(started_id(proc.stderr), command, expected, jobrun)


@pytest.fixture
def alices_dir() -> Iterator[Path]:
    """A directory named in non-ASCII that alice owns, where jobrund and her jobs can see it
    (not under /tmp or /var/tmp: jobrund has a /tmp of its own)."""
    base = Path(tempfile.mkdtemp(prefix="jobrun-text-", dir="/var/lib"))  # private to the sandbox
    d = base / "dïr ✓"
    d.mkdir()
    os.chmod(base, 0o755)
    subprocess.run(["chown", "alice:", str(d)], check=True)
    yield d
    subprocess.run(["rm", "-rf", str(base)], check=True)


@pytest.mark.integration
@pytest.mark.daemon
def test_non_ascii_everywhere_through_jobrund(alices_dir: Path) -> None:
    proc = as_user("alice", "run", "--", "echo", TEXT)
    assert (proc.returncode, proc.stdout) == (0, TEXT + "\n"), proc.stderr
    assert "Traceback" not in proc.stderr

    command = ["sh", "-c", SCRIPT, "sh", TEXT]
    proc = as_user(
        "alice", "run", "--name", NAME, "-E", f"K={VALUE}", "-C", str(alices_dir),
        "--shared-tmp", "--profile", "relaxed", "--", *command,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job = started_id(proc.stderr)
    assert proc.stdout == f"{TEXT}|{VALUE}|{alices_dir}\n"
    check_shown_back(job, command, proc.stdout, lambda *a: as_user("alice", *a))
    # and to an admin, who sees every job
    assert json.loads(as_user("carol", "status", job, "--json").stdout)["name"] == NAME
    wait_for(lambda: as_user("root", "logs", job).stdout == proc.stdout, what="root's logs")


# -- Ctrl-C in `jobrun run` ------------------------------------------------------------------


class Running:
    """`jobrun run` in the background, its stdout and stderr in files to poll."""

    def __init__(self, tmp: Path, user: str, *args: str) -> None:
        cmd = jobrun_cmd(user, "run", *args)
        env = dict(os.environ) if user == "root" else daemon_env()
        self.out, self.err = tmp / "out", tmp / "err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd="/")
        self.user = user

    def wait_for_output(self, text: str) -> None:
        wait_for(lambda: text in self.out.read_text(), timeout=30, what=f"{text!r} on stdout")

    def job(self) -> str:
        wait_for(lambda: "started" in self.err.read_text(), timeout=30, what="the job to start")
        return started_id(self.err.read_text())

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def status(self, job: str) -> dict[str, Any]:
        cli = jobrun if self.user == "root" else (lambda *a: as_user(self.user, *a))
        data: dict[str, Any] = json.loads(cli("status", job, "--json").stdout)
        return data


@pytest.mark.integration
@pytest.mark.usefixtures("state_dir")
@pytest.mark.parametrize("user", ["root", pytest.param("alice", marks=pytest.mark.daemon)])
def test_ctrl_c_sends_sigint_to_the_job_and_run_exits_with_its_status(
    user: str, tmp_path: Path
) -> None:
    run = Running(tmp_path, user, "--", "sh", "-c", "echo ready; exec sleep 60")
    job = run.job()
    run.wait_for_output("ready")
    run.interrupt()
    assert run.proc.wait(timeout=30) == 130, run.err.read_text()
    done = run.status(job)
    assert (done["state"], done["signal"]) == ("failed", "SIGINT"), done
    assert "Traceback" not in run.err.read_text()


@pytest.mark.integration
@pytest.mark.usefixtures("state_dir")
@pytest.mark.parametrize("user", ["root", pytest.param("alice", marks=pytest.mark.daemon)])
def test_second_ctrl_c_stops_a_job_that_survives_the_first(user: str, tmp_path: Path) -> None:
    script = 'trap "echo got-INT" INT; echo ready; while :; do sleep 1; done'
    run = Running(tmp_path, user, "--", "sh", "-c", script)
    job = run.job()
    run.wait_for_output("ready")
    run.interrupt()
    run.wait_for_output("got-INT")  # the job's own processes got SIGINT, and it carries on
    assert run.status(job)["state"] == "running" and run.proc.poll() is None
    run.interrupt()
    assert run.proc.wait(timeout=30) == 128 + signal.SIGTERM, run.err.read_text()
    assert run.status(job)["state"] == "stopped"
    assert "Traceback" not in run.err.read_text()


@pytest.mark.integration
@pytest.mark.daemon
async def test_kill_is_authorized_as_stop_is() -> None:
    job = await asyncio.to_thread(start_as, "alice", "--", "sleep", "60")
    for who, sig, error in (
        ("bob", signal.SIGINT, "NotFound"),  # another's job: as if there were none
        ("alice", 0, "InvalidArgument"),
        ("alice", 99, "InvalidArgument"),
    ):
        err, _ = await _call_as(who, "Kill", [job, int(sig)])
        assert err == f"org.jobrun.Error.{error}", (who, sig)
    assert (await asyncio.to_thread(status_as, "alice", job))["state"] == "running"
    err, body = await _call_as("carol", "Kill", [job, int(signal.SIGINT)])
    assert err is None and body[1] is True
    done = await asyncio.to_thread(
        wait_for,
        lambda: (s := status_as("alice", job))["state"] != "running" and s,
        what="the job to end",
    )
    assert (done["state"], done["signal"]) == ("failed", "SIGINT")
