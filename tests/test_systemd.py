"""jobrun.systemd against a real systemd: the bound on systemd jobs queued at once; the unit
properties a status fetches.

PID 1 tracks the requester of each queued job with a match rule on the bus, and dbus-daemon allows
it 512: past that PID 1 drops off the bus. The client therefore keeps at most MAX_QUEUED_JOBS of
its jobs unfinished; further starts wait for a slot.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
from dbus_fast import Variant

from jobrun import manager, outcome
from jobrun import systemd as systemd_module
from jobrun.model import new_job_id
from jobrun.outcome import STATUS_PROPERTIES
from jobrun.systemd import Systemd

from .helpers import wait_for_async

pytestmark = pytest.mark.integration


def gated_oneshot(gate: Path) -> list[tuple[str, Variant]]:
    """A Type=oneshot unit: its start job stays queued until the command ends, at the gate."""
    script = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    return [
        ("Type", Variant("s", "oneshot")),
        ("ExecStart", Variant("a(sasb)", [("/bin/sh", ["/bin/sh", "-c", script], False)])),
        ("CollectMode", Variant("s", "inactive-or-failed")),
    ]


async def unit_exists(sd: Systemd, name: str) -> bool:
    return await sd.get_unit(name) is not None


async def queued(sd: Systemd, names: list[str]) -> int:
    (jobs,) = await sd.call("ListJobs")
    return sum(1 for j in jobs if j[1] in names)


async def test_starts_past_the_bound_wait_for_a_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd_module, "MAX_QUEUED_JOBS", 2)
    gate = tmp_path / "gate"
    names = [f"jobrun-{new_job_id()}.service" for _ in range(4)]
    sd = await Systemd.connect()
    try:
        await sd.subscribe()
        first = [await sd.start_transient_unit(n, gated_oneshot(gate)) for n in names[:2]]
        assert len(first) == 2 and await queued(sd, names) == 2
        later = [
            asyncio.create_task(sd.start_transient_unit(n, gated_oneshot(gate))) for n in names[2:]
        ]
        # The first two hold both slots while their start jobs wait at the gate: the others are
        # not even asked for (systemd has no such unit). Checked a few times over 0.5 s.
        for _ in range(5):
            await asyncio.sleep(0.1)
            assert not any(t.done() for t in later)
            assert not await unit_exists(sd, names[2]) and not await unit_exists(sd, names[3])
        gate.touch()
        async with asyncio.timeout(30):
            await asyncio.gather(*later)
    finally:
        gate.touch()
        sd.close()


async def test_a_lost_job_removed_frees_its_slot_after_asking_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd_module, "MAX_QUEUED_JOBS", 1)
    monkeypatch.setattr(systemd_module, "_RECONCILE_AFTER", 0.5)
    gate = tmp_path / "gate"
    gate.touch()  # the units finish at once
    names = [f"jobrun-{new_job_id()}.service" for _ in range(2)]
    sd = await Systemd.connect()
    try:
        await sd.subscribe()
        # As if this connection missed the first job's JobRemoved (a bus reconnect).
        real = sd._on_message

        def deaf(msg: object) -> bool:
            return False

        sd.bus.remove_message_handler(real)
        sd.bus.add_message_handler(deaf)
        await sd.start_transient_unit(names[0], gated_oneshot(gate))

        async def gone() -> bool:
            return await queued(sd, names[:1]) == 0

        await wait_for_async(gone, timeout=30, what="the first job to finish", interval=0.01)
        sd.bus.remove_message_handler(deaf)
        sd.bus.add_message_handler(real)
        # Its slot is still taken (no JobRemoved came); the next start asks systemd.
        assert len(sd._queued) == 1
        async with asyncio.timeout(30):
            await sd.start_transient_unit(names[1], gated_oneshot(gate))
    finally:
        sd.close()


async def test_unit_properties_keeps_only_the_names_asked_for(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    name = f"jobrun-{new_job_id()}.service"
    sd = await Systemd.connect()
    try:
        await sd.subscribe()
        await sd.start_transient_unit(name, gated_oneshot(gate))
        path = await sd.get_unit(name)
        assert path is not None
        everything = await sd.unit_properties(path)
        # All that a status reads, but for what only a newer systemd has (MemoryPeak: 254).
        assert len(everything) > 200 and everything.keys() >= STATUS_PROPERTIES - {"MemoryPeak"}
        asked = {"ActiveState", "MemoryCurrent", "NoSuchProperty"}
        some = await sd.unit_properties(path, asked)
        assert some.keys() == {"ActiveState", "MemoryCurrent"}
        assert some["ActiveState"] in ("activating", "inactive")
    finally:
        gate.touch()
        sd.close()


def test_status_properties_name_every_property_a_status_reads() -> None:
    """Every `props.get("Name")` / `props["Name"]` of the status code is fetched."""
    read: set[str] = set()
    for module in (outcome, manager):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for node in ast.walk(tree):
            key = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "props"
                and node.args
            ):
                key = node.args[0]
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id == "props"
            ):
                key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                read.add(key.value)
    assert len(read) >= 15
    assert read <= STATUS_PROPERTIES, read - STATUS_PROPERTIES
