"""jobrund's D-Bus interface, defined once: the daemon serves it and the client calls it.

One table, METHODS, drives jobrund's introspection data, its dispatch (each method's `verb` is
the handler's name) and the client's calls. Job records travel as JSON text (the objects
`jobrun status --json` prints, wire/jobs.py) rather than nested a{sv} dictionaries: one schema
for the CLI and D-Bus, and trivially introspectable.
"""

from __future__ import annotations

BUS_NAME = "org.jobrun.Manager1"
PATH = "/org/jobrun/Manager1"
INTERFACE = "org.jobrun.Manager1"


class Method:
    """One method (a plain class, not a dataclass: the CLI's fast path reads this table, and
    `dataclasses` imports `inspect`, ~7 ms of a ~40 ms `jobrun status`)."""

    __slots__ = ("args_in", "args_out", "name", "verb")

    def __init__(
        self,
        name: str,
        verb: str,  # jobrund's handler
        args_in: tuple[tuple[str, str], ...] = (),  # (name, D-Bus type)
        args_out: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.name, self.verb, self.args_in, self.args_out = name, verb, args_in, args_out

    @property
    def sig_in(self) -> str:
        return "".join(t for _, t in self.args_in)

    @property
    def sig_out(self) -> str:
        return "".join(t for _, t in self.args_out)


_JOB = ("job", "s")  # JSON of a job
_SCHEDULE = ("schedule", "s")  # JSON of a schedule (wire/schedules.py)
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # command, options (settings table fields + "name", and "stdin": a descriptor)
        Method("Start", "start", (("command", "as"), ("options", "a{sv}")), (_JOB,)),
        # `run --scope`: command, options (the settings a scope takes, + "name"), the caller's
        # child to put in the scope: its PID, start time (/proc/PID/stat field 22), a pidfd
        Method(
            "StartScope",
            "start_scope",
            (
                ("command", "as"),
                ("options", "a{sv}"),
                ("pid", "u"),
                ("start_time", "t"),
                ("pidfd", "h"),
            ),
            (_JOB,),
        ),
        # id, exit code (-1: none), signal (0: none) → job: a scope's end, as its client saw it
        Method(
            "ReportScopeExit",
            "report_scope_exit",
            (("id", "s"), ("exit_code", "i"), ("signal", "i")),
            (_JOB,),
        ),
        # id (or prefix), timeout (< 0: the job's own) → job, was it running
        Method("Stop", "stop", (("id", "s"), ("timeout", "d")), (_JOB, ("was_running", "b"))),
        # id, signal number → job, was it running (`jobrun run`'s Ctrl-C)
        Method("Kill", "kill", (("id", "s"), ("signal", "i")), (_JOB, ("was_running", "b"))),
        Method("Status", "status", (("id", "s"),), (_JOB,)),
        # id → job: freeze / thaw every process of a running job (WrongState otherwise)
        Method("Pause", "pause", (("id", "s"),), (_JOB,)),
        Method("Resume", "resume", (("id", "s"),), (_JOB,)),
        # id, settings to change (settings table fields whose `live` is set) → job
        Method("Set", "set_limits", (("id", "s"), ("options", "a{sv}")), (_JOB,)),
        # all → JSON list of jobs
        Method("List", "list_jobs", (("all", "b"),), (("jobs", "s"),)),
        # id, options (wire/dbus.py LOGS_OPTIONS) → the read end of a pipe of frames (wire/logs.py)
        Method("Logs", "logs", (("id", "s"), ("options", "a{sv}")), (("fd", "h"),)),
        # JobChanged signals for the caller's jobs, until it disconnects
        Method("Subscribe", "subscribe"),
        # JSON list of usage samples (wire/usage.py) of the caller's running jobs (`top`)
        Method("Usage", "usage", (), (("samples", "s"),)),
        # name, options (wire/groups.py: parallel, paused, slice limits) → JSON of the group
        Method("GroupSet", "group_set", (("name", "s"), ("options", "a{sv}")), (("group", "s"),)),
        # → JSON list of the caller's groups (an admin's: everyone's)
        Method("Groups", "groups", (), (("groups", "s"),)),
        # the caller's user name and whether it may manage every job
        Method("Whoami", "whoami", (), (("user", "s"), ("admin", "b"))),
        # Schedules (schedule.py): command, options (Start's, and wire/schedules.py
        # SCHEDULE_OPTIONS: when) → JSON of the schedule
        Method("Schedule", "schedule", (("command", "as"), ("options", "a{sv}")), (_SCHEDULE,)),
        Method("ListSchedules", "list_schedules", (), (("schedules", "s"),)),
        Method("ShowSchedule", "show_schedule", (("id", "s"),), (_SCHEDULE,)),
        # id → the schedule removed (its runs stay)
        Method("RemoveSchedule", "remove_schedule", (("id", "s"),), (_SCHEDULE,)),
        # id → the run started, "" if the last one still runs (called by the schedule's timer,
        # as its owner)
        Method("FireSchedule", "fire_schedule", (("id", "s"),), (_JOB,)),
    )
}


def introspection_xml() -> str:
    lines = [
        '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"',
        ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">',
        "<node>",
        f' <interface name="{INTERFACE}">',
    ]
    for method in METHODS.values():
        lines.append(f'  <method name="{method.name}">')
        for name, t in method.args_in:
            lines.append(f'   <arg name="{name}" type="{t}" direction="in"/>')
        for name, t in method.args_out:
            lines.append(f'   <arg name="{name}" type="{t}" direction="out"/>')
        lines.append("  </method>")
    lines += [
        '  <signal name="JobChanged">',
        '   <arg name="id" type="s"/>',
        '   <arg name="state" type="s"/>',
        "  </signal>",
        " </interface>",
        ' <interface name="org.freedesktop.DBus.Introspectable">',
        '  <method name="Introspect"><arg name="xml" type="s" direction="out"/></method>',
        " </interface>",
        ' <interface name="org.freedesktop.DBus.Peer">',
        '  <method name="Ping"/>',
        '  <method name="GetMachineId"><arg name="id" type="s" direction="out"/></method>',
        " </interface>",
        "</node>",
    ]
    return "\n".join(lines) + "\n"
