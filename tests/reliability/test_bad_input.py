"""Bad input through the CLI and jobrund's D-Bus API: each gets a clear error, starts nothing (no
unit, no job record) and leaves jobrund running, with the same PID, answering.

The job ID cases (ID_CASES) also go through the remote gRPC API (test_grpc_bad_job_ids); the
gRPC request shapes are BAD_GRPC in tests/test_remote.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from jobrun import dbus_api as api
from jobrun.bus import connect_system_bus
from jobrun.errors import JobrunError, error_classes

from .. import remote_helpers
from .. import test_remote as grpc
from ..helpers import as_user, dbus_call_as, start_as
from .common import (
    job_units,
    jobrund_answers,
    jobrund_pid,
    report,
    store_ids,
    wait_final,
)

pytestmark = [pytest.mark.integration, pytest.mark.daemon, pytest.mark.reliability]

INVALID_UTF8 = os.fsdecode(b"\xff\xfebad")  # what Python makes of non-UTF-8 argv bytes
HUGE = "x" * 200_000
BIG = "x" * 100_000  # the most one argv string may be is 128 KiB (MAX_ARG_STRLEN)
RUN = ["--", "sleep", "600"]  # what a start would run: a unit that stays, if one started

# (id, CLI arguments, text the error must contain)
CLI_CASES: list[tuple[str, list[str], str]] = [
    ("cpu-weight-0", ["start", "--cpu-weight", "0", *RUN], "--cpu-weight must be from 1"),
    ("cpu-weight-10001", ["start", "--cpu-weight", "10001", *RUN], "not 10001"),
    ("cpu-weight-negative", ["start", "--cpu-weight", "-5", *RUN], "not -5"),
    ("cpu-weight-text", ["start", "--cpu-weight", "lots", *RUN], "whole number"),
    ("cpu-weight-overflow", ["start", "--cpu-weight", "9" * 30, *RUN], "--cpu-weight"),
    ("memory-max-negative", ["start", "--memory-max", "-1", *RUN], "--memory-max must be a size"),
    ("memory-max-zero", ["start", "--memory-max", "0", *RUN], "at least 1 byte"),
    ("memory-max-overflow", ["start", "--memory-max", "99999999P", *RUN], "below 16 EiB"),
    # refused by its length before it is parsed (every value is bounded: tests/security)
    ("memory-max-400-digits", ["start", "--memory-max", "9" * 400, *RUN], "longer than 256"),
    ("memory-high-above-max",
     ["start", "--memory-high", "2G", "--memory-max", "1G", *RUN], "must not be above"),
    ("tasks-max-0", ["start", "--tasks-max", "0", *RUN], "--tasks-max"),
    ("tasks-max-overflow", ["start", "--tasks-max", "4194305", *RUN], "--tasks-max"),
    ("cpu-quota-0", ["start", "--cpu-quota", "0%", *RUN], "--cpu-quota must be from 1%"),
    ("cpu-quota-5000-digits", ["start", "--cpu-quota", "9" * 5000, *RUN], "--cpu-quota"),
    ("cpu-affinity-huge-range",
     ["start", "--cpu-affinity", "0-10000000000", *RUN], "from 0 to 8191"),
    ("cpu-affinity-backwards", ["start", "--cpu-affinity", "5-2", *RUN], "--cpu-affinity"),
    ("io-weight-10001", ["start", "--io-weight", "10001", *RUN], "--io-weight"),
    ("stop-timeout-negative", ["start", "--stop-timeout", "-1", *RUN], "--stop-timeout"),
    ("stop-timeout-nan", ["start", "--stop-timeout", "nan", *RUN], "--stop-timeout"),
    ("unknown-property", ["start", "--property", "User=root", *RUN], "No such option"),
    ("unknown-profile", ["start", "--profile", "root", *RUN], "unknown profile"),
    ("name-newline", ["start", "--name", "a\nb", *RUN], "--name must be"),
    ("name-too-long", ["start", "--name", "n" * 65, *RUN], "--name must be"),
    ("env-10000-vars",
     ["start", *(a for i in range(10_000) for a in ("-E", f"V{i}=x")), *RUN], "at most 4096"),
    ("env-bad-key", ["start", "-E", "1BAD=x", *RUN], "--env takes KEY=VALUE"),
    ("env-control-char", ["start", "-E", "A=\x01", *RUN], "control characters"),
    ("env-invalid-utf8", ["start", "-E", f"A={INVALID_UTF8}", *RUN], "valid UTF-8"),
    ("argv-invalid-utf8", ["start", "--", "echo", INVALID_UTF8], "valid UTF-8"),
    ("argv-huge", ["start", "--", "echo", BIG, BIG], "longer than"),
    ("no-command", ["start"], "no command given"),
    ("empty-command", ["start", "--", ""], "no command given"),
    ("workdir-relative", ["start", "-C", "../x", *RUN], "--workdir must be an absolute path"),
    ("writable-proc", ["start", "--writable", "/proc", *RUN], "kernel interface"),
    ("network-under-strict",
     ["start", "--profile", "strict", "--network", *RUN], "--network cannot work"),
    ("status-dotdot", ["status", "../x"], "is not a job ID"),
    ("status-unit-name", ["status", "foo.service"], "is not a job ID"),
    ("stop-newline", ["stop", "abc\ndef"], "is not a job ID"),
    ("logs-unit-name", ["logs", "jobrun-abc.service"], "is not a job ID"),
    ("logs-huge-id", ["logs", BIG], "is not a job ID"),
    ("logs-negative-tail", ["logs", "--tail", "-1", "abc"], "--tail"),
    ("logs-bad-since", ["logs", "--since", "yesterday-ish", "abc"], "--since takes a time"),
]  # fmt: skip


def V(sig: str, value: Any) -> Variant:
    return Variant(sig, value)


# Start requests: (id, command, options, D-Bus error name)
START_CASES: list[tuple[str, list[str], dict[str, Variant], str]] = [
    ("user-root", ["sleep", "600"], {"user": V("s", "root")}, "InvalidArgument"),
    ("raw-User", ["sleep", "600"], {"User": V("s", "root")}, "InvalidArgument"),
    ("field-command", ["sleep", "600"], {"command": V("as", ["id"])}, "InvalidArgument"),
    ("cpu-weight-double", ["sleep", "600"], {"cpu_weight": V("d", 1e300)}, "InvalidArgument"),
    ("cpu-weight-negative", ["sleep", "600"], {"cpu_weight": V("x", -1)}, "InvalidArgument"),
    ("cpu-weight-bool", ["sleep", "600"], {"cpu_weight": V("b", True)}, "InvalidArgument"),
    ("memory-max-u64-max", ["sleep", "600"], {"memory_max": V("t", 2**64 - 1)},
     "InvalidArgument"),
    ("memory-max-400-digits", ["sleep", "600"], {"memory_max": V("s", "9" * 400)},
     "InvalidArgument"),
    ("env-not-a-list", ["sleep", "600"], {"env": V("x", 5)}, "InvalidArgument"),
    ("env-10000", ["sleep", "600"], {"env": V("as", [f"V{i}=x" for i in range(10_000)])},
     "InvalidArgument"),
    ("affinity-huge-range", ["sleep", "600"], {"cpu_affinity": V("s", "0-10000000000")},
     "InvalidArgument"),
    ("name-list", ["sleep", "600"], {"name": V("as", ["x"])}, "InvalidArgument"),
    ("name-newline", ["sleep", "600"], {"name": V("s", "a\nb")}, "InvalidArgument"),
    ("workdir-dotdot", ["sleep", "600"], {"workdir": V("s", "../x")}, "InvalidArgument"),
    ("writable-root", ["sleep", "600"], {"writable": V("as", ["/"])}, "InvalidArgument"),
    ("profile-unknown", ["sleep", "600"], {"profile": V("s", "unconfined")}, "InvalidArgument"),
    ("stop-timeout-inf", ["sleep", "600"], {"stop_timeout": V("d", float("inf"))},
     "InvalidArgument"),
    ("network-maybe", ["sleep", "600"], {"network": V("s", "maybe")}, "InvalidArgument"),
    ("nested-dict", ["sleep", "600"], {"cpu_weight": V("a{sv}", {"x": V("s", "1")})},
     "InvalidArgument"),
    ("10000-unknown-keys", ["sleep", "600"], {f"k{i}": V("b", True) for i in range(10_000)},
     "InvalidArgument"),
    ("no-command", [], {}, "InvalidArgument"),
    ("empty-argv0", ["", "x"], {}, "InvalidArgument"),
    ("huge-argv", ["echo", HUGE], {}, "InvalidArgument"),
]  # fmt: skip

# Job IDs for Status/Stop/Logs: none may name anything but a job
ID_CASES: list[tuple[str, str, str]] = [
    ("dotdot", "../x", "InvalidArgument"),
    ("unit-name", "foo.service", "InvalidArgument"),
    ("jobrun-unit-name", "jobrun-abc.service", "InvalidArgument"),
    ("newline", "abc\ndef", "InvalidArgument"),
    ("huge", HUGE, "InvalidArgument"),
    ("empty", "", "InvalidArgument"),
    ("glob", "*", "InvalidArgument"),
    ("unknown", "zzzzzzzzzz", "NotFound"),
]

# Logs options (the job ID is valid-looking; options are checked first)
LOGS_CASES: list[tuple[str, dict[str, Variant], str]] = [
    ("tail-negative", {"tail": V("x", -1)}, "InvalidArgument"),
    ("since-overflow", {"since_usec": V("x", 2**62)}, "InvalidArgument"),
    ("follow-text", {"follow": V("s", "yes")}, "InvalidArgument"),
    ("tail-text", {"tail": V("s", "10")}, "InvalidArgument"),
    ("unknown-option", {"bogus": V("b", True)}, "InvalidArgument"),
    ("empty-cursor", {"after_cursor": V("s", "")}, "InvalidArgument"),
    ("huge-cursor", {"after_cursor": V("s", HUGE)}, "InvalidArgument"),
]

# Whole calls with the wrong shape: (id, member, signature, body, D-Bus error name)
SHAPE_CASES: list[tuple[str, str, str, list[Any], str]] = [
    ("start-signature-s", "Start", "s", ["sleep 600"], "org.jobrun.Error.InvalidArgument"),
    ("start-options-a{ss}", "Start", "asa{ss}", [["sleep", "600"], {"cpu_weight": "5"}],
     "org.jobrun.Error.InvalidArgument"),
    ("start-no-body", "Start", "", [], "org.jobrun.Error.InvalidArgument"),
    ("list-signature-s", "List", "s", ["all"], "org.jobrun.Error.InvalidArgument"),
    ("stop-timeout-text", "Stop", "ss", ["abc", "1"], "org.jobrun.Error.InvalidArgument"),
    ("unknown-method", "Frobnicate", "", [], "org.freedesktop.DBus.Error.UnknownMethod"),
]  # fmt: skip

PROJECT_ERRORS = set(error_classes()) - {"org.jobrun.Error.Failed"}


@pytest.fixture
def unchanged() -> Iterator[None]:
    """Nothing started, nothing recorded, jobrund the same process and answering."""
    pid = jobrund_answers()
    rows, units = store_ids(), job_units()
    yield
    assert store_ids() == rows, "a bad request added a job record"
    assert job_units() <= units, f"a bad request started {job_units() - units}"
    assert jobrund_pid() == pid, "jobrund died or restarted"
    assert jobrund_answers() == pid


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])  # fmt: skip
def test_cli_bad_input(args: list[str], needle: str, unchanged: None) -> None:
    proc = as_user("alice", *args)
    assert proc.returncode not in (0, 70), (proc.returncode, proc.stderr)
    assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


async def _call(
    bus: MessageBus, member: str, signature: str, body: list[Any]
) -> tuple[str | None, list[Any]]:
    reply = await bus.call(
        Message(
            destination=api.BUS_NAME,
            path=api.PATH,
            interface=api.INTERFACE,
            member=member,
            signature=signature,
            body=body,
        )
    )
    assert reply is not None
    err = reply.error_name if reply.message_type == MessageType.ERROR else None
    return err, list(reply.body)


async def _root_call(member: str, body: list[Any]) -> tuple[str | None, list[Any]]:
    bus = await connect_system_bus()
    try:
        return await _call(bus, member, api.METHODS[member].sig_in, body)
    finally:
        bus.disconnect()


def _clear(err: str | None, body: list[Any], want: str) -> None:
    assert err is not None, f"accepted: {body}"
    assert err in PROJECT_ERRORS, (err, body)
    assert err == want or err.endswith("." + want), (err, body)
    assert body and isinstance(body[0], str) and body[0].strip(), "an error without a message"
    assert "Traceback" not in body[0]


@pytest.mark.parametrize(("command", "options", "want"), [c[1:] for c in START_CASES],
                         ids=[c[0] for c in START_CASES])  # fmt: skip
async def test_dbus_start_bad_input(
    command: list[str], options: dict[str, Variant], want: str, unchanged: None
) -> None:
    err, body = await _root_call("Start", [command, options])
    _clear(err, body, want)


@pytest.mark.parametrize(("job_id", "want"), [c[1:] for c in ID_CASES],
                         ids=[c[0] for c in ID_CASES])  # fmt: skip
async def test_dbus_job_id_injection(job_id: str, want: str, unchanged: None) -> None:
    calls: list[tuple[str, list[Any]]] = [
        ("Status", [job_id]),
        ("Stop", [job_id, 1.0]),
        ("Logs", [job_id, {}]),
    ]
    for member, body in calls:
        err, reply = await _root_call(member, body)
        _clear(err, reply, want)


@pytest.mark.parametrize(("options", "want"), [c[1:] for c in LOGS_CASES],
                         ids=[c[0] for c in LOGS_CASES])  # fmt: skip
async def test_dbus_logs_bad_options(
    options: dict[str, Variant], want: str, unchanged: None
) -> None:
    err, body = await _root_call("Logs", ["abc", options])
    _clear(err, body, want)


@pytest.mark.parametrize(("member", "signature", "body", "want"),
                         [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES])  # fmt: skip
async def test_dbus_wrong_shapes(
    member: str, signature: str, body: list[Any], want: str, unchanged: None
) -> None:
    bus = await connect_system_bus()
    try:
        err, reply = await _call(bus, member, signature, body)
    finally:
        bus.disconnect()
    assert err == want, (err, reply)


@pytest.mark.parametrize(
    "body_code",
    [
        "[['sleep', '600'], {'cpu_affinity': V('s', '0-10000000000')}]",
        "[['sleep', '600'], {'User': V('s', 'root')}]",
        "[['sleep', '600'], {'command': V('as', ['id'])}]",
        "[['sleep', '600'], {'env': V('as', ['V%d=x' % i for i in range(10000)])}]",
    ],
    ids=["affinity-huge-range", "raw-User", "field-command", "env-10000"],
)
def test_dbus_bad_start_as_a_plain_user(body_code: str, unchanged: None) -> None:
    # the same call as alice (polkit's path)
    err, body = dbus_call_as("alice", "Start", body_code)
    _clear(err, body, "InvalidArgument")


def test_labels_that_look_like_unit_names_stay_labels() -> None:
    """--name is a label: "../x", "foo.service" never become a unit's name."""
    for name in ("../x", "foo.service", "jobrun-x.service"):
        job = start_as("alice", "--name", name, "--", "true")
        assert wait_final("alice", job)["name"] == name
        assert all(u.startswith("jobrun-") and u != name for u in job_units())
    assert not {"foo.service", "x.service", "jobrun-x.service"} & job_units()


def test_count_of_bad_inputs_tried() -> None:
    """The figure for docs/RELIABILITY.md (each D-Bus ID case is tried on three methods)."""
    figures = {
        "cli": len(CLI_CASES),
        "dbus_start": len(START_CASES) + 4,
        "dbus_job_ids": 3 * len(ID_CASES),
        "dbus_logs": len(LOGS_CASES),
        "dbus_shapes": len(SHAPE_CASES),
        "labels": 3,
        "grpc_job_ids": 3 * len(ID_CASES),
        "grpc_requests": len(grpc.BAD_GRPC),
    }
    figures["total"] = sum(figures.values())
    report("bad_input", figures)
    assert figures["total"] >= 40


@pytest.fixture(scope="module")
def remote() -> Iterator[remote_helpers.Remote]:
    """jobrund with its remote API on (as tests/test_remote.py's fixture)."""
    with remote_helpers.remote_jobrund() as r:
        yield r


@pytest.mark.parametrize(("job_id", "want"), [c[1:] for c in ID_CASES],
                         ids=[c[0] for c in ID_CASES])  # fmt: skip
async def test_grpc_bad_job_ids(
    remote: remote_helpers.Remote, job_id: str, want: str, unchanged: None
) -> None:
    """ID_CASES through the remote API (Status, Stop, Logs): the same clear error as on D-Bus.
    The gRPC request shapes (malformed messages, out-of-range options) are BAD_GRPC in
    tests/test_remote.py."""
    for fn, args in (("status", (job_id,)), ("stop", (job_id, None)), ("logs", (job_id,))):
        with pytest.raises(JobrunError) as e:
            if fn == "logs":
                await remote_helpers.output(remote, "alice", job_id, follow=False)
            else:
                await remote_helpers.call(remote, "alice", fn, *args)
        assert e.value.dbus_name == f"org.jobrun.Error.{want}", (fn, e.value)
        assert e.value.message.strip() and "Traceback" not in e.value.message
