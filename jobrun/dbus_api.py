"""jobrund's D-Bus interface, defined once: the daemon serves it and the client calls it.

One table, METHODS, drives jobrund's introspection data, its dispatch (each method's `verb` is
the handler's name) and the client's calls. Job records travel as JSON text (the objects
`jobrun status --json` prints, wire/jobs.py) rather than nested a{sv} dictionaries: one schema
for the CLI and D-Bus, and trivially introspectable.
"""

from __future__ import annotations

from dataclasses import dataclass

BUS_NAME = "org.jobrun.Manager1"
PATH = "/org/jobrun/Manager1"
INTERFACE = "org.jobrun.Manager1"


@dataclass(frozen=True)
class Method:
    name: str
    verb: str  # jobrund's handler
    args_in: tuple[tuple[str, str], ...] = ()  # (name, D-Bus type)
    args_out: tuple[tuple[str, str], ...] = ()

    @property
    def sig_in(self) -> str:
        return "".join(t for _, t in self.args_in)

    @property
    def sig_out(self) -> str:
        return "".join(t for _, t in self.args_out)


_JOB = ("job", "s")  # JSON of a job
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # command, options (settings table fields + "name", and "stdin": a descriptor)
        Method("Start", "start", (("command", "as"), ("options", "a{sv}")), (_JOB,)),
        # id (or prefix), timeout (< 0: the job's own) → job, was it running
        Method("Stop", "stop", (("id", "s"), ("timeout", "d")), (_JOB, ("was_running", "b"))),
        # id, signal number → job, was it running (`jobrun run`'s Ctrl-C)
        Method("Kill", "kill", (("id", "s"), ("signal", "i")), (_JOB, ("was_running", "b"))),
        Method("Status", "status", (("id", "s"),), (_JOB,)),
        # all → JSON list of jobs
        Method("List", "list_jobs", (("all", "b"),), (("jobs", "s"),)),
        # id, options (wire/dbus.py LOGS_OPTIONS) → the read end of a pipe of frames (wire/logs.py)
        Method("Logs", "logs", (("id", "s"), ("options", "a{sv}")), (("fd", "h"),)),
        # JobChanged signals for the caller's jobs, until it disconnects
        Method("Subscribe", "subscribe"),
        # name, options (wire/groups.py: parallel, paused, slice limits) → JSON of the group
        Method("GroupSet", "group_set", (("name", "s"), ("options", "a{sv}")), (("group", "s"),)),
        # → JSON list of the caller's groups (an admin's: everyone's)
        Method("Groups", "groups", (), (("groups", "s"),)),
        # the caller's user name and whether it may manage every job
        Method("Whoami", "whoami", (), (("user", "s"), ("admin", "b"))),
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
