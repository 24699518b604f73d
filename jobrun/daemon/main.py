"""jobrund's entry point: the D-Bus service, and the gRPC one where the config asks for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from .. import dbus_api as api
from .. import deadline, live
from ..aio import end_task
from ..bus import connect_system_bus
from ..config import Config
from ..dispatch import Dispatcher
from ..errors import JobrunError
from ..manager import Manager
from ..store import Store
from .dbus import Daemon

log = logging.getLogger("jobrund")


async def serve() -> None:
    with contextlib.ExitStack() as stack:
        await _serve(stack)


async def _serve(stack: contextlib.ExitStack) -> None:
    config = Config.load()
    server_tls = None
    if config.remote is not None:  # the gRPC API (its imports only where it is configured)
        from . import grpc as remote_api

        server_tls = remote_api.server_tls(config.remote)  # a bad CA or CRL: no start at all
    bus = await connect_system_bus()
    manager = await Manager.open(Store())
    manager.holds_deadlines = True  # --timeout: jobrund's clock, stopped while paused
    dispatcher = Dispatcher(manager)
    dispatcher.remote = config.remote  # whom an admin's `group --owner remote:NAME` means
    daemon = Daemon(bus, manager, config, dispatcher)
    daemon.scheduler.tls = server_tls  # a remote identity's revoked certificate fires nothing
    bus.add_message_handler(daemon.on_message)
    # Signals reach the daemon only through the systemd client's filter, which passes on only
    # those of systemd and of the bus: a signal forged by another user is dropped there.
    stack.enter_context(manager.systemd.listen(daemon.on_signal))
    await manager.systemd.watch_bus_names()
    # Timers gone with a reboot are back before the first request (daemon/schedules.py); a
    # catch-up firing calls jobrund, so it waits until jobrund is on the bus.
    catch_up = await daemon.scheduler.restore()
    await bus.request_name(api.BUS_NAME)
    # The queue carries on from the database: what waited or ran when jobrund last stopped.
    dispatcher.start()
    await daemon.scheduler.catch_up(catch_up)
    remote = None
    if config.remote is not None:
        remote = await remote_api.serve(manager, config, server_tls, dispatcher)
    exporter = None
    if config.metrics is not None:
        from ..metrics import export

        exporter = asyncio.get_running_loop().create_task(export(manager, config.metrics))
        log.info("metrics every %gs in %s", config.metrics.interval, config.metrics.path)
    # The accounting a job leaves behind: its cgroup's last reading (live.py, accounting.py).
    sampler = asyncio.get_running_loop().create_task(live.sample_forever(manager))
    # --timeout of jobs started here; overdue ones (jobrund was down) end at once (deadline.py).
    keeper = asyncio.get_running_loop().create_task(deadline.keep_forever(manager))
    log.info("jobrund ready on the system bus as %s (config: %s)", api.BUS_NAME, config.source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = loop.create_task(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("jobrund stopping; running jobs keep running")
    for task in (exporter, sampler, keeper):
        if task is not None:
            await end_task(task)
    if remote is not None:
        remote.close()
        await remote.wait_closed()
    # Log streams end without their end frame (clients ask again after their last cursor), not
    # with the end their feeds would report once the manager closes them.
    await daemon.end_streams()
    await dispatcher.close()
    bus.disconnect()
    await manager.close()


def main() -> None:
    """The `jobrund` command."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        asyncio.run(serve())
    except JobrunError as e:
        log.error("%s", e)
        sys.exit(1)
