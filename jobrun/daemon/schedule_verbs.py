"""jobrund's D-Bus verbs for schedules (dbus_api.METHODS names them; daemon/schedules.py does
the work). The Daemon serves them with its own verbs: same dispatch, same admission."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..wire import dbus as wire
from ..wire.jobs import job_json
from ..wire.schedules import pop_when, schedule_json, schedules_json

if TYPE_CHECKING:
    from dbus_fast import Message

    from ..manager import Caller
    from .schedules import Scheduler


class ScheduleVerbs:
    scheduler: Scheduler

    async def schedule(self, msg: Message, caller: Caller) -> list[Any]:
        command, options = msg.body
        options = dict(options) if isinstance(options, dict) else options
        when = pop_when(options)
        # The same check of every caller string as Start's (properties.build_spec).
        spec = wire.decode_start(command, options)
        sched = await self.scheduler.create(spec, caller, **when)
        return [schedule_json(sched)]

    async def list_schedules(self, msg: Message, caller: Caller) -> list[Any]:
        return [schedules_json(await self.scheduler.list(caller))]

    async def show_schedule(self, msg: Message, caller: Caller) -> list[Any]:
        return [schedule_json(await self.scheduler.show(msg.body[0], caller))]

    async def remove_schedule(self, msg: Message, caller: Caller) -> list[Any]:
        return [schedule_json(await self.scheduler.remove(msg.body[0], caller))]

    async def fire_schedule(self, msg: Message, caller: Caller) -> list[Any]:
        job = await self.scheduler.fire(msg.body[0], caller)
        return [job_json(job) if job is not None else ""]
