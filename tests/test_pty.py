"""`jobrun run --pty`: an interactive job on a terminal of its own, against the real systemd.

Root runs it in process (the library), alice through jobrund. Each drives the real CLI from a
terminal of the test's (a pseudo-terminal pair: the test types into its master and reads what
the CLI shows), as a user would. jobrund must refuse a descriptor that is not a pseudo-terminal,
and another user's.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from typing import Any

import pytest

from .helpers import (
    NotYet,
    T,
    as_user,
    as_user_cmd,
    cgroup_pids,
    daemon_env,
    jobrun,
    jobrun_cmd,
    status,
    status_as,
    wait_for,
)

pytestmark = pytest.mark.integration

USERS = ["root", pytest.param("alice", marks=pytest.mark.daemon)]
PROMPT = b"READY> "  # the job's shell's prompt (PS1)


class Terminal:
    """The CLI on a terminal of the test's: type into it, read the screen's bytes."""

    def __init__(self, cmd: list[str], env: dict[str, str], rows: int = 33, cols: int = 101):
        self.master, slave = os.openpty()
        self.resize(rows, cols, signal_cli=False)
        self.cli = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env,
                                    cwd="/", start_new_session=True)  # fmt: skip
        os.close(slave)
        self.seen = b""

    def resize(self, rows: int, cols: int, signal_cli: bool = True) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if signal_cli:  # (the CLI is not this terminal's foreground process: tell it)
            self.cli.send_signal(signal.SIGWINCH)

    def _read(self) -> None:
        if select.select([self.master], [], [], 0.05)[0]:
            try:
                self.seen += os.read(self.master, 65536)
            except OSError:  # EIO: the CLI has closed the terminal (it has exited)
                time.sleep(0.05)  # (nothing more will come; do not spin)

    def until(self, condition: Callable[[], T | NotYet], what: str, timeout: float = 30) -> T:
        """Read the screen until `condition()` holds (its value); failing, say what it showed."""

        def step() -> T | NotYet:
            self._read()
            return condition()

        try:
            return wait_for(step, what=what, timeout=timeout, interval=0)
        except AssertionError as e:
            raise AssertionError(f"{e}; the terminal showed: {self.seen!r}") from None

    def expect(self, pattern: bytes, what: str, after: int = 0, timeout: float = 30) -> int:
        """Wait until `pattern` (a regex) shows after offset `after`; where its match ends."""

        def found() -> int | None:
            m = re.compile(pattern).search(self.seen, after)
            return m.end() if m else None

        end: int = self.until(found, what, timeout)
        return end

    def exit_status(self, timeout: float = 30) -> int:
        """Wait until the CLI exits, reading the screen meanwhile; its exit status."""
        self.until(lambda: self.cli.poll() is not None, "the CLI's exit", timeout)
        return self.cli.returncode

    def type(self, text: bytes) -> int:
        """Type `text`; the offset from which its effects show."""
        self._read()
        at = len(self.seen)
        os.write(self.master, text)
        return at

    def close(self) -> None:
        if self.cli.poll() is None:
            self.cli.kill()
            self.cli.wait()
        os.close(self.master)


def _cli(user: str, *args: str) -> tuple[list[str], dict[str, str]]:
    if user == "root":
        return [sys.executable, "-m", "jobrun", *args], {**os.environ, "JOBRUN_MODE": "local"}
    return jobrun_cmd(user, *args), daemon_env()


def _status(user: str, job_id: str) -> dict[str, Any]:
    return status(job_id) if user == "root" else status_as(user, job_id)


def _run(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return jobrun(*args) if user == "root" else as_user(user, *args)


SHELL = ["bash", "--norc", "--noprofile", "-i"]


def _sleep_in_foreground(unit: str) -> bool:
    """Whether the job's shell runs `sleep` as its terminal's foreground process group: only
    then does a Ctrl-C or Ctrl-Z typed reach it (typed between bash's fork and its tcsetpgrp,
    it reaches the shell, which ignores it)."""
    for pid in cgroup_pids(unit) or []:
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp, session, tty_nr, tpgid
        if comm == "sleep" and fields[2] == fields[5]:
            return True
    return False


@pytest.mark.parametrize("user", USERS)
def test_interactive_shell(user: str) -> None:
    cmd, env = _cli(user, "run", "--pty", "-E", f"PS1={PROMPT.decode()}", "--", *SHELL)
    term = Terminal(cmd, env)
    try:
        started = term.expect(rb"job ([a-z0-9]+) started \((jobrun-[a-z0-9]+\.service)\)",
                              "the job's start")  # fmt: skip
        m = re.search(rb"job ([a-z0-9]+) started \((jobrun-[a-z0-9]+\.service)\)", term.seen)
        assert m is not None and started
        job_id, unit = m.group(1).decode(), m.group(2).decode()
        term.expect(re.escape(PROMPT), "the shell's prompt")
        # Input reaches the job's shell, its output this terminal.
        at = term.type(b"echo $((6*7))\r")
        term.expect(rb"[\r\n]42\r\n", "the shell's answer", at)
        at = term.type(b"tty; test -t 0 && test -t 1 && test -t 2 && echo ALL-TTY\r")
        term.expect(rb"[\r\n]/dev/pts/\d+\r\nALL-TTY\r\n", "the job's terminal", at)
        # The window size: as it was at the start, then as it changes.
        at = term.type(b"stty size\r")
        term.expect(rb"[\r\n]33 101\r\n", "the initial size", at)
        term.resize(40, 120)

        def resized() -> bool:
            at = term.type(b"stty size\r")
            term.expect(re.escape(PROMPT), "the prompt again", at)
            return re.search(rb"[\r\n]40 120\r\n", term.seen[at:]) is not None

        wait_for(resized, what="the new window size in the job")
        # Ctrl-C interrupts what the shell runs in the foreground; the shell lives on.
        at = term.type(b"sleep 100; echo NOT-REACHED\r")
        wait_for(lambda: _sleep_in_foreground(unit), what="the sleep in the job's foreground")
        term.type(b"\x03")
        term.expect(re.escape(PROMPT), "the prompt after Ctrl-C", at)
        at = term.type(b"echo alive $((1+1))\r")
        term.expect(rb"[\r\n]alive 2\r\n", "the shell after Ctrl-C", at)
        assert not re.search(rb"[\r\n]NOT-REACHED", term.seen), term.seen
        # Ctrl-Z stops it: job control in the job's shell.
        at = term.type(b"sleep 100\r")
        wait_for(lambda: _sleep_in_foreground(unit), what="the sleep in the job's foreground")
        term.type(b"\x1a")
        term.expect(rb"Stopped\s+sleep 100", "the shell's report of the stopped sleep", at)
        at = term.type(b"kill %1; wait; echo killed\r")
        term.expect(rb"[\r\n]killed\r\n", "the stopped sleep killed", at)
        # Its end is jobrun's: exit status and the job's record right afterwards.
        at = term.type(b"exit 3\r")
        # bash refuses a first `exit` while it still counts the killed sleep as stopped (its
        # end not reaped yet, a race of bash's own under load); a second `exit` ends it anyway.
        refused = b"There are stopped jobs"
        term.until(lambda: term.cli.poll() is not None or refused in term.seen[at:],
                   "the shell's exit, or its refusal")  # fmt: skip
        if term.cli.poll() is None:
            term.type(b"exit 3\r")
        assert term.exit_status() == 3, term.seen
    finally:
        term.close()
    job = _status(user, job_id)
    assert (job["state"], job["exit_code"], job["terminal"]) == ("failed", 3, True), job
    # Its output went to the terminal: `logs` says so, as for a scope job.
    logs = _run(user, "logs", job_id)
    assert logs.returncode == 5, logs.stderr
    assert "run --pty" in logs.stderr and "not to the journal" in logs.stderr


@pytest.mark.parametrize("user", USERS)
def test_stdin_not_a_terminal(user: str) -> None:
    """stdin piped: what it says is typed on the job's terminal, its end is a Ctrl-D there."""
    cmd, env = _cli(user, "run", "--pty", "--", "sh")
    proc = subprocess.run(cmd, input="tty; echo $((2+3))\n", capture_output=True, text=True,
                          env=env, cwd="/", timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"/dev/pts/\d+\r?$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^5\r?$", proc.stdout, re.M), proc.stdout


def test_large_input_from_a_file_while_the_job_echoes_it(tmp_path: Any) -> None:
    """200 kB from a file (epoll cannot watch one) through a terminal whose input buffer holds
    4 kB, all echoed back meanwhile: jobrun relays both ways at once, no deadlock, no loss."""
    lines = 20000
    data = tmp_path / "input"
    data.write_text("".join(f"{i:08d}\n" for i in range(lines)))
    with data.open("rb") as stdin:
        cmd, env = _cli("root", "run", "--pty", "--", "wc", "-l")
        proc = subprocess.run(cmd, stdin=stdin, capture_output=True, env=env, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.replace(b"\r", b"").splitlines()
    assert out[-1].strip() == str(lines).encode(), out[-3:]  # every line reached the job
    # The echo is the kernel's, and not lossless: n_tty drops echoes when its 4 KiB echo buffer
    # overruns while the master's reader is behind (seen here under load: 19,384 of 20,000
    # lines echoed, wc still counting all). What jobrun relays must still be in order, with
    # nothing repeated or made up: the echoed bytes are a subsequence of the input.
    sent = data.read_bytes().replace(b"\n", b"")
    echoed = b"".join(out[:-1])
    at = 0
    for byte in echoed:
        at = sent.find(bytes([byte]), at) + 1
        assert at > 0, "echo out of order, or bytes that were never sent"


def test_signal_exit_status_and_success() -> None:
    proc = jobrun("run", "--pty", "--", "sh", "-c", "echo hello; kill -TERM $$")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "hello" in proc.stdout
    proc = jobrun("run", "--pty", "--", "sh", "-c", "echo last words")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.replace("\r", "") == "last words\n"


def test_refused_with_scope_and_remote() -> None:
    proc = jobrun("run", "--pty", "--scope", "--", "true")
    assert proc.returncode == 2 and "--pty and --scope" in proc.stderr, proc.stderr
    tls = ("--cert", "/dev/null", "--key", "/dev/null", "--ca", "/dev/null")
    proc = jobrun("--remote", "127.0.0.1:1", *tls, "run", "--pty", "--", "true")
    assert proc.returncode == 2, proc.stderr
    assert "a remote jobrund cannot open one here" in proc.stderr, proc.stderr


# A raw Start as alice, with the descriptor of argv[1] as its terminal ("pipe": a pipe's).
_START_WITH = """
import asyncio, json, os, sys
from dbus_fast import Message, MessageType, Variant as V
from jobrun.bus import connect_system_bus
from jobrun import dbus_api as api

async def main(fd):
    bus = await connect_system_bus()
    r = await bus.call(Message(destination=api.BUS_NAME, path=api.PATH, interface=api.INTERFACE,
                               member="Start", signature="asa{sv}",
                               body=[["true"], {"tty": V("h", 0)}], unix_fds=[fd]))
    print(json.dumps([r.error_name, r.body]))

arg = sys.argv[1]
asyncio.run(main(os.pipe()[0] if arg == "pipe" else int(arg)))
"""


def _start_as_alice_with(fd: str, pass_fds: tuple[int, ...] = ()) -> tuple[str, str]:
    proc = subprocess.run(
        as_user_cmd("alice", sys.executable, "-c", _START_WITH, fd),
        capture_output=True, text=True, timeout=60, cwd="/", pass_fds=pass_fds,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    error, body = json.loads(proc.stdout)
    return error, str(body[0]) if body else ""


def _alice_jobs() -> int:
    proc = as_user("alice", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return len(json.loads(proc.stdout))


@pytest.mark.daemon
def test_jobrund_refuses_what_is_not_the_callers_terminal() -> None:
    import pwd

    before = _alice_jobs()
    error, text = _start_as_alice_with("pipe")
    assert error == "org.jobrun.Error.InvalidArgument", text
    assert "pseudo-terminal" in text
    with open("/etc/hostname", "rb") as regular, open("/dev/null", "rb") as null:
        for f in (regular, null):  # a regular file; a character device that is no terminal
            error, text = _start_as_alice_with(str(f.fileno()), (f.fileno(),))
            assert error == "org.jobrun.Error.InvalidArgument", text
    # bob's terminal (devpts gives it its opener's UID; root hands it to bob as login does)
    master, slave = os.openpty()
    try:
        os.fchown(slave, pwd.getpwnam("bob").pw_uid, -1)
        error, text = _start_as_alice_with(str(slave), (slave,))
        assert error == "org.jobrun.Error.PermissionDenied", text
        assert "not yours" in text
        # ... and the same terminal, alice's: accepted (the check is the owner, nothing else)
        os.fchown(slave, pwd.getpwnam("alice").pw_uid, -1)
        error, text = _start_as_alice_with(str(slave), (slave,))
        assert error is None, text
        job = json.loads(text)
        assert job["terminal"] is True
        assert _alice_jobs() == before + 1  # the refusals recorded nothing
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.parametrize("profile", ["strict", "default", "relaxed"])
def test_every_profile_lets_the_job_use_its_terminal(profile: str) -> None:
    """PrivateDevices= (strict, default) keeps /dev/pts; PrivateUsers= (strict) still lets the
    job set its terminal's modes: systemd opens the terminal before it sandboxes the job."""
    script = "tty; stty -echo && stty size && test -t 0 && test -t 1 && test -t 2 && echo ALL-TTY"
    proc = jobrun("run", "--pty", "--profile", profile, "--", "sh", "-c", script)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    lines = proc.stdout.replace("\r", "").splitlines()
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), lines
    assert re.fullmatch(r"\d+ \d+", lines[1]), lines  # (24 80: jobrun's stdin is no terminal)
    assert lines[2:] == ["ALL-TTY"], lines


def test_jobrun_killed_restores_the_terminal_and_hangs_up_the_job() -> None:
    """jobrun's own end (SIGTERM, or its terminal gone): this terminal's modes as they were,
    and the job's terminal hung up (its session leader gets SIGHUP, as with a closed ssh)."""
    cmd, env = _cli("root", "run", "--pty", "--", *SHELL)
    term = Terminal(cmd, env)
    try:
        before = termios.tcgetattr(term.master)  # (a master's are its slave's: the CLI's)
        term.expect(rb"job ([a-z0-9]+) started", "the job's start")
        m = re.search(rb"job ([a-z0-9]+) started", term.seen)
        assert m is not None
        job_id = m.group(1).decode()
        term.expect(rb"\$ ", "the shell's prompt")
        raw = termios.tcgetattr(term.master)
        assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO  # raw while it runs
        term.cli.send_signal(signal.SIGTERM)
        assert term.cli.wait(timeout=30) == 130
        assert termios.tcgetattr(term.master) == before
    finally:
        term.close()
    job = wait_for(lambda: (s := status(job_id))["state"] != "running" and s,
                   what="the job's end", timeout=30)  # fmt: skip
    assert job["state"] == "failed" and job["signal"] == "SIGHUP", job
