"""Fuzzing jobrund's request decoding with hypothesis.

Any request body either decodes to valid values or raises InvalidArgument — never another
exception (which jobrund would answer with a generic internal error). A spec that decodes must
also become a StartTransientUnit request that marshals. The unit-level fuzz needs no systemd;
a smaller one sends random Start options to the live jobrund.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast._private.unmarshaller import Unmarshaller
from dbus_fast.errors import InvalidMessageError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jobrun import dbus_api as api
from jobrun.bus import connect_system_bus
from jobrun.errors import InvalidArgument, error_classes
from jobrun.model import JobSpec, JobState
from jobrun.outcome import from_unit
from jobrun.properties import SETTINGS
from jobrun.unit import UnitContext, unit_properties
from jobrun.wire import dbus as dbus_wire

from .common import FULL, jobrund_answers, jobrund_pid, report

pytestmark = pytest.mark.reliability

EXAMPLES = 5000 if FULL else 400
LIVE_EXAMPLES = 300 if FULL else 40
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEYS = [s.field for s in SETTINGS] + ["name", "command", "user", "User", "", "ExecStart"]
# Text as D-Bus delivers it (valid UTF-8) plus what Python could hand the library directly.
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0", "-1", "1", "512M", "2G", "0-3", "0-10000000000", "150%", "nan", "inf",
                     "1e400", "9" * 400, "/", "/proc", "/tmp/x", "../x", "a\nb", "A=1", "1=A",
                     "strict", "default", "relaxed", "yes", "no", "\udcff"]),
)  # fmt: skip
INTS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, 1, -1, 10000, 10001, 2**64 - 1]),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def _variants() -> st.SearchStrategy[Variant]:
    scalar = st.one_of(
        TEXT.filter(_utf8).map(lambda v: Variant("s", v)),
        st.booleans().map(lambda v: Variant("b", v)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: Variant("x", v)),
        st.integers(0, 2**64 - 1).map(lambda v: Variant("t", v)),
        st.integers(-(2**31), 2**31 - 1).map(lambda v: Variant("i", v)),
        FLOATS.map(lambda v: Variant("d", v)),
        st.binary(max_size=20).map(lambda v: Variant("ay", v)),
        st.lists(TEXT.filter(_utf8), max_size=5).map(lambda v: Variant("as", v)),
    )
    # One level of nesting (a{sv} in a{sv}) is as deep as any decoder looks.
    nested = st.dictionaries(st.text(max_size=5), scalar, max_size=3).map(
        lambda d: Variant("a{sv}", d)
    )
    return st.one_of(scalar, nested)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


VARIANTS = _variants()
OPTIONS = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), VARIANTS,
                          max_size=6)  # fmt: skip
COMMANDS: st.SearchStrategy[object] = st.one_of(
    st.lists(TEXT, max_size=4),
    st.just(["true"]),
    st.just([]),
    TEXT,
    INTS,
)
LOGS = st.dictionaries(
    st.one_of(st.sampled_from(sorted(dbus_wire.LOGS_OPTIONS)), st.text(max_size=10)),
    st.one_of(VARIANTS, st.integers(), st.text(max_size=5), st.booleans()),
    max_size=4,
)


def _marshals(spec: JobSpec) -> None:
    """The StartTransientUnit request this spec makes can be sent."""
    props = unit_properties("fuzz0000aa", spec, UnitContext(user=1001))
    Message(
        destination="org.freedesktop.systemd1",
        path="/org/freedesktop/systemd1",
        interface="org.freedesktop.systemd1.Manager",
        member="StartTransientUnit",
        signature="ssa(sv)a(sa(sv))",
        body=["jobrun-fuzz0000aa.service", "fail", props, []],
    )._marshall(False)


@FUZZ
@given(command=COMMANDS, options=OPTIONS)
def test_start_decoding_gives_a_spec_or_invalid_argument(command: Any, options: Any) -> None:
    try:
        spec = dbus_wire.decode_start(command, options)
    except InvalidArgument as e:
        assert e.message
        return
    assert isinstance(spec, JobSpec)
    _marshals(spec)


@FUZZ
@given(command=st.lists(st.text(max_size=20).filter(_utf8), max_size=4), options=OPTIONS)
def test_start_messages_off_the_wire_decode_or_are_refused(
    command: list[str], options: dict[str, Variant]
) -> None:
    """The whole path: a Start message marshalled as a client would, unmarshalled as jobrund
    receives it, decoded."""
    msg = Message(
        destination=api.BUS_NAME,
        path=api.PATH,
        interface=api.INTERFACE,
        member="Start",
        signature=api.METHODS["Start"].sig_in,
        body=[command, options],
        serial=1,
    )
    try:
        wire = bytes(msg._marshall(False))
    except InvalidMessageError:
        assume(False)  # not sendable (a NUL in a string): no client can make jobrund see it
    # The stream dbus-fast's Unmarshaller reads a message from: the bytes, as from a socket.
    unmarshaller = Unmarshaller(io.BufferedRWPair(io.BytesIO(wire), io.BytesIO()))
    received = unmarshaller.unmarshall()
    assert received is not None and received.signature == "asa{sv}"
    try:
        spec = dbus_wire.decode_start(*received.body)
    except InvalidArgument:
        return
    _marshals(spec)


@FUZZ
@given(options=LOGS)
def test_logs_options_decode_or_are_refused(options: Any) -> None:
    try:
        kwargs = dbus_wire.decode_logs_options(options)
    except InvalidArgument:
        return
    assert set(kwargs) == {"follow", "tail", "after_cursor", "since", "batch_cursors"}
    assert kwargs["tail"] is None or kwargs["tail"] >= 0


@settings(max_examples=200, deadline=None, database=None)
@given(job=st.tuples(st.integers(0, 2**32 - 1), st.text(max_size=10)),
       active=st.sampled_from(["inactive", "activating", "active"]))  # fmt: skip
def test_a_unit_with_a_queued_start_is_running(job: tuple[int, str], active: str) -> None:
    """Regression (load test): right after StartTransientUnit a unit can be "inactive" with
    Result=success while its start job waits; that is a running job, not a succeeded one."""
    props = {"ActiveState": active, "Result": "success", "ExecMainCode": 0,
             "ExecMainStatus": 0, "Job": list(job)}  # fmt: skip
    state = from_unit(JobSpec(command=("true",)), props, False, False).state
    if job[0] != 0 or active in ("activating", "active"):
        assert state is JobState.RUNNING
    else:
        assert state is not JobState.RUNNING


# -- against the live jobrund ------------------------------------------------------------------

LIVE_OPTIONS = st.dictionaries(
    st.sampled_from([s.field for s in SETTINGS if s.field not in ("writable", "workdir")]
                    + ["name", "bogus"]),
    VARIANTS,
    max_size=4,
)  # fmt: skip


@pytest.mark.integration
@pytest.mark.daemon
def test_live_jobrund_answers_random_start_options_clearly() -> None:
    """Random options on a real Start (command `true`): a job or an error of jobrun's own, and
    jobrund stays the same process."""
    pid = jobrund_answers()
    outcomes: dict[str, int] = {}
    project = set(error_classes()) - {"org.jobrun.Error.Failed"}

    async def call(options: dict[str, Variant]) -> str:
        bus = await connect_system_bus()
        try:
            r = await bus.call(
                Message(
                    destination=api.BUS_NAME,
                    path=api.PATH,
                    interface=api.INTERFACE,
                    member="Start",
                    signature="asa{sv}",
                    body=[["true"], options],
                )
            )
        finally:
            bus.disconnect()
        assert r is not None
        if r.message_type == MessageType.ERROR:
            assert r.error_name in project, (r.error_name, r.body, options)
            return str(r.error_name)
        return "started"

    @settings(max_examples=LIVE_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(options=LIVE_OPTIONS)
    def one(options: dict[str, Variant]) -> None:
        try:
            got = asyncio.run(call(options))
        except InvalidMessageError:
            assume(False)  # not sendable (a NUL in a string): jobrund can never see it
            return
        outcomes[got] = outcomes.get(got, 0) + 1

    one()
    assert jobrund_pid() == pid
    assert jobrund_answers() == pid
    report("fuzz_live", {"examples": sum(outcomes.values()), "outcomes": outcomes})
