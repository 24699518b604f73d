"""jobrund asks polkit the two questions of a method that starts jobs at once
(admission.authorized_dbus_caller), with the same decisions and errors as asking them one after
the other (dbus_caller, then authorize) for every caller, method and answer of polkit; and only
the questions the one after the other would ask. A `Start` asks `manage-all` only where the
answer changes the job (admission.admit_start), and gives the same jobs as before.

polkit's answers are played by a stand-in here (every combination of yes, no and polkit failing
is the point); tests/test_daemon.py checks the decisions against the real polkitd."""

from __future__ import annotations

import asyncio
import itertools
import pwd
from typing import Any

import pytest

from jobrun.daemon import admission, polkit
from jobrun.errors import JobrunError, PermissionDenied
from jobrun.model import queued

ANSWERS: list[bool | str] = [True, False, "fails"]  # polkit says yes, no, or cannot be asked
UIDS = [0, pwd.getpwnam("nobody").pw_uid, 2**31 - 7]  # root, a user, a uid with no name
VERBS = [*admission.ACTIONS, "whoami"]


class Polkit:
    """polkit.check's stand-in: `answers` by action; records the questions, how many were in
    flight at most, and lets two be in flight at once (each waits a moment for the other)."""

    def __init__(self, answers: dict[str, bool | str]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, bool]] = []
        self.in_flight = self.most = 0

    async def check(self, bus: Any, sender: str, action: str, interactive: bool = False) -> bool:
        self.asked.append((action, interactive))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)  # a round trip to polkitd: another question may start
        self.in_flight -= 1
        answer = self.answers[action]
        if answer == "fails":
            raise PermissionDenied("cannot check authorization with polkit: x", "hint")
        return bool(answer)


async def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "caller", await call
    except JobrunError as e:
        return "error", (type(e), e.message, e.hint)


async def one_after_the_other(
    sender: str | None, uid: int, verb: str, interactive: bool
) -> Any:  # the code before: dbus.py called these two in a row
    caller = await admission.dbus_caller(None, sender or "", uid)  # type: ignore[arg-type]
    await admission.authorize(None, sender, caller, verb, interactive)  # type: ignore[arg-type]
    return caller


async def test_same_decisions_and_errors_and_start_asks_both_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    actions = [polkit.ACTION_MANAGE_ALL, polkit.ACTION_START, polkit.ACTION_MANAGE_OWN]
    cases = 0
    for answers in itertools.product(ANSWERS, repeat=len(actions)):
        by_action = dict(zip(actions, answers, strict=True))
        for uid, verb, sender, interactive in itertools.product(
            UIDS, VERBS, [":1.42", None], [False, True]
        ):
            if verb in admission.ADMIN_WHEN_IT_MATTERS and uid != 0 and sender is not None:
                continue  # with admit_start, as a whole: test_start_asks_manage_all_only_...
            before, now = Polkit(by_action), Polkit(by_action)
            monkeypatch.setattr(polkit, "check", before.check)
            want = await outcome(one_after_the_other(sender, uid, verb, interactive))
            monkeypatch.setattr(polkit, "check", now.check)
            got = await outcome(
                admission.authorized_dbus_caller(None, sender, uid, verb, interactive)  # type: ignore[arg-type]
            )
            case = (by_action, uid, verb, sender, interactive)
            assert got == want, case
            # Every method that starts jobs (start, run --scope, schedules) asks `start`'s action.
            starts = verb in admission.ACTIONS and admission.ACTIONS[verb][0] == polkit.ACTION_START
            if not starts:
                assert now.asked == before.asked, case  # manage-own only after manage-all's no
            else:  # both, even where the one after the other stopped at the first (no sooner)
                assert set(now.asked) <= set(before.asked) | {(polkit.ACTION_START, interactive)}
                assert set(before.asked) <= set(now.asked), case
            if starts and uid != 0 and sender is not None and uid != UIDS[2]:
                assert now.most == 2, case  # both questions in flight together
                assert before.most == 1
            cases += 1
    deferred = len(admission.ADMIN_WHEN_IT_MATTERS) * (len(UIDS) - 1) * 2
    assert cases == 27 * (len(UIDS) * len(VERBS) * 4 - deferred)


class Counts:
    """Manager's two counts of a caller's running jobs: the job database's upper bound (jobs
    without a recorded end) and systemd's exact one, which is recorded when asked."""

    def __init__(
        self, unfinished: int, running: int, slices: dict[str, dict[str, int]] | None = None
    ) -> None:
        self.unfinished, self.running = unfinished, running
        self.asked_systemd = False
        self.slices = slices or {}  # the limits set_slice_limits gave each slice

    def slice_limits_of(self, slice_name: str) -> dict[str, int] | None:
        return self.slices.get(slice_name)

    def unfinished_count(self, caller: Any) -> int:
        return self.unfinished

    async def running_count(self, caller: Any) -> int:
        self.asked_systemd = True
        return self.running


@pytest.mark.parametrize(
    ("unfinished", "running", "asks_systemd", "admitted"),
    [
        (0, 0, False, True),
        (2, 2, False, True),  # below the cap of 3 by the upper bound: systemd is not asked
        (3, 1, True, True),  # the bound reaches it: systemd's count decides (some had ended)
        (9, 2, True, True),
        (3, 3, True, False),
        (9, 5, True, False),
    ],
)
async def test_the_running_jobs_cap_asks_systemd_only_when_the_bound_reaches_it(
    unfinished: int, running: int, asks_systemd: bool, admitted: bool
) -> None:
    from jobrun.caller import Caller
    from jobrun.config import Caps, Config
    from jobrun.properties import build_spec

    user = pwd.getpwuid(UIDS[1]).pw_name
    config = Config(users={user: Caps(running_jobs=3)})
    counts = Counts(unfinished, running)
    call = admission.admit(config, counts, build_spec(["true"]), Caller(UIDS[1], user))  # type: ignore[arg-type]
    kind, value = await outcome(call)
    assert counts.asked_systemd is asks_systemd
    assert (kind == "caller") is admitted, value
    if not admitted:
        assert value[0] is PermissionDenied and f"you already have {running} " in value[1]


async def start_before(
    sender: str | None, uid: int, interactive: bool, config: Any, spec: Any, manager: Any
) -> tuple[Any, ...]:  # both polkit questions, then admit
    caller = await one_after_the_other(sender, uid, "start", interactive)
    return (caller, *await admission.admit(config, manager, spec, caller))


async def start_now(
    sender: str | None, uid: int, interactive: bool, config: Any, spec: Any, manager: Any
) -> tuple[Any, ...]:  # as daemon/dbus.py's Start
    bus: Any = None
    caller = await admission.authorized_dbus_caller(bus, sender, uid, "start", interactive)
    return await admission.admit_start(config, manager, spec, caller, bus, sender or "")


async def test_start_asks_manage_all_only_where_it_changes_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A D-Bus Start (authorized_dbus_caller, then admit_start) against the code before (both
    polkit questions, then admit): the same job (spec, the slice's limits as systemd ends up
    with them, the caller the queue keeps) or the same error, for every answer of polkit, caller,
    config, spec and slice; and `manage-all` is not asked where the caps leave the job as it
    is, which is the point."""
    from jobrun.caller import Caller
    from jobrun.config import Caps, Config
    from jobrun.properties import build_spec

    user = pwd.getpwuid(UIDS[1]).pw_name
    slice_name = Caller(UIDS[1], user).unit_context().slice_name
    configs = {
        "built-in": Config(),
        "a memory cap": Config(limits=Caps(numeric={"memory_max": 512 << 20})),
        "a default": Config(defaults={"cpu_weight": 50}),
        "no jobs": Config(users={user: Caps(running_jobs=0)}),
        "a profile cap": Config(limits=Caps(profile="strict")),
    }
    specs = {
        "plain": build_spec(["true"]),
        "1G": build_spec(["true"], memory_max="1G"),
        "relaxed": build_spec(["true"], profile="relaxed"),
        "queued": build_spec(["true"], group="g"),
    }
    actions = [polkit.ACTION_MANAGE_ALL, polkit.ACTION_START]
    unasked = cases = 0
    for answers in itertools.product(ANSWERS, repeat=len(actions)):
        by_action = dict(zip(actions, answers, strict=True))
        for uid, sender, interactive, config, spec, in_place in itertools.product(
            UIDS, [":1.42", None], [False, True], configs.values(), specs.values(), [False, True]
        ):
            slices = {slice_name: config.slice_limits(user)} if in_place else {}
            before, now = Polkit(by_action), Polkit(by_action)

            start = (sender, uid, interactive, config, spec, Counts(0, 0, slices))
            monkeypatch.setattr(polkit, "check", before.check)
            want = await outcome(start_before(*start))
            monkeypatch.setattr(polkit, "check", now.check)
            got = await outcome(start_now(*start))
            case = (by_action, uid, sender, interactive, config, spec, in_place)
            cases += 1
            manage_all = (polkit.ACTION_MANAGE_ALL, False)
            # Never a question more than the code before (which asked `start` even where
            # `manage-all` failed: both at once).
            assert set(now.asked) <= set(before.asked) | {(polkit.ACTION_START, interactive)}
            # Where nothing binds: a plain job, its slice's limits set, caps that leave it be.
            binds = spec is not specs["plain"] or not in_place or config is not configs["built-in"]
            if uid == UIDS[1] and sender is not None and not binds:
                assert now.asked == [(polkit.ACTION_START, interactive)], case
                unasked += 1
            if got[0] != want[0] or (got[0] == "error" and got != want):
                # Only where the code before failed on a question this one need not ask (it
                # gives the job, or `start`'s own no).
                assert by_action[polkit.ACTION_MANAGE_ALL] == "fails", case
                assert manage_all not in now.asked, case
                continue
            if got[0] == "error":
                continue
            (w_caller, w_spec, w_limits), (g_caller, g_spec, g_limits) = want[1], got[1]
            assert g_spec == w_spec, case

            in_effect = slices.get(slice_name)  # what the slice gets: None, it is left as it is
            assert (None if g_limits in (None, in_effect) else g_limits) == (
                None if w_limits in (None, in_effect) else w_limits
            ), case
            assert (g_caller.uid, g_caller.user) == (w_caller.uid, w_caller.user), case
            if queued(spec) or g_caller.admin:
                assert g_caller == w_caller, case
    assert unasked == 9 * 2  # every answer of polkit, interactive or not
    assert cases == 9 * len(UIDS) * 2 * 2 * len(configs) * len(specs) * 2
