"""One error hierarchy for the whole of jobrun.

Library code raises these; front ends map them once, through the class attributes here, to a
D-Bus error name (jobrund), a gRPC status (the remote API) and a process exit code (the CLI);
clients map a D-Bus-style name back to its class with `error_from_name` (the gRPC API sends the
same names in its trailing metadata).
Anything that is not a JobrunError is a bug: front ends report it as an internal error and log it,
they never ship a Python traceback to a caller.
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing's, without importing typing (~3 ms) on the CLI's fast path

if TYPE_CHECKING:
    from typing import ClassVar

# Exit codes of the CLI (sysexits-style where one fits).
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_PERMISSION = 4
EXIT_NO_OUTPUT = 5  # `logs` of a job whose output never went to the journal (a scope)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE
EXIT_INTERNAL = 70  # EX_SOFTWARE


class JobrunError(Exception):
    """Base of every error jobrun reports to a user.

    `message` says what went wrong, `hint` what to do about it (may be empty).
    """

    dbus_name: ClassVar[str] = "org.jobrun.Error.Failed"
    grpc_status: ClassVar[str] = "INTERNAL"
    exit_code: ClassVar[int] = EXIT_FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class InvalidArgument(JobrunError):
    """The request is malformed or out of range; nothing was changed."""

    dbus_name = "org.jobrun.Error.InvalidArgument"
    grpc_status = "INVALID_ARGUMENT"
    exit_code = EXIT_USAGE


class JobNotFound(JobrunError):
    """No job with this ID (or prefix) exists — or the caller may not know that it does."""

    dbus_name = "org.jobrun.Error.NotFound"
    grpc_status = "NOT_FOUND"
    exit_code = EXIT_NOT_FOUND


class AmbiguousJobId(InvalidArgument):
    """A prefix matched more than one job."""

    dbus_name = "org.jobrun.Error.AmbiguousId"


class WrongState(JobrunError):
    """The job is not in a state the request applies to (pausing a finished job, resuming a
    running one); nothing was changed."""

    dbus_name = "org.jobrun.Error.WrongState"
    grpc_status = "FAILED_PRECONDITION"


class PermissionDenied(JobrunError):
    dbus_name = "org.jobrun.Error.PermissionDenied"
    grpc_status = "PERMISSION_DENIED"
    exit_code = EXIT_PERMISSION


class SystemdUnavailable(JobrunError):
    """The system bus or systemd cannot be reached."""

    dbus_name = "org.jobrun.Error.Unavailable"
    grpc_status = "UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


class SystemdError(JobrunError):
    """systemd refused or failed a request."""

    dbus_name = "org.jobrun.Error.Systemd"
    grpc_status = "FAILED_PRECONDITION"

    def __init__(self, message: str, hint: str = "", dbus_error: str | None = None) -> None:
        super().__init__(message, hint)
        self.dbus_error = dbus_error  # systemd's own error name, e.g. ...systemd1.NoSuchUnit


class StateError(JobrunError):
    """jobrun's own state (the job database) cannot be read or written."""

    dbus_name = "org.jobrun.Error.State"
    grpc_status = "INTERNAL"
    exit_code = EXIT_INTERNAL


class Busy(JobrunError):
    """jobrund holds as much work for this caller (or for all) as it will: try again later."""

    dbus_name = "org.jobrun.Error.Busy"
    grpc_status = "RESOURCE_EXHAUSTED"


class OutputLost(JobrunError):
    """Part of a job's output is no longer in the journal (rotated or vacuumed away)."""

    dbus_name = "org.jobrun.Error.OutputLost"
    grpc_status = "DATA_LOSS"


class NoJournalOutput(JobrunError):
    """The job's output never went to the journal: a scope job's went to its caller's
    terminal (`jobrun run --scope`), a terminal job's to its pseudo-terminal (`run --pty`)."""

    dbus_name = "org.jobrun.Error.NoJournalOutput"
    grpc_status = "FAILED_PRECONDITION"
    exit_code = EXIT_NO_OUTPUT


class Unauthenticated(PermissionDenied):
    """The remote peer's certificate does not name a user jobrun accepts."""

    dbus_name = "org.jobrun.Error.Unauthenticated"
    grpc_status = "UNAUTHENTICATED"


class RemoteUnavailable(JobrunError):
    """A remote jobrund cannot be reached, or dropped the connection (e.g. refused our TLS)."""

    dbus_name = "org.jobrun.Error.RemoteUnavailable"
    grpc_status = "UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


HINT_SEPARATOR = "\n\nhint: "  # between message and hint in an error reply's text


def error_text(e: JobrunError) -> str:
    """The text of an error reply (D-Bus) or status message (gRPC): message and hint."""
    return e.message + (HINT_SEPARATOR + e.hint if e.hint else "")


def error_classes() -> dict[str, type[JobrunError]]:
    """Every error class by its D-Bus name (a subclass never takes over its base's name)."""
    out: dict[str, type[JobrunError]] = {}
    todo: list[type[JobrunError]] = [JobrunError]
    while todo:
        cls = todo.pop()
        out.setdefault(cls.dbus_name, cls)
        todo.extend(cls.__subclasses__())
    return out


def error_from_name(name: str | None, text: str) -> JobrunError:
    """The JobrunError an error reply named `name` stands for (JobrunError itself for unknown
    names; a foreign name is kept in the message)."""
    cls = error_classes().get(name or "", JobrunError)
    message, _, hint = text.partition(HINT_SEPARATOR)
    if cls is JobrunError and name and not name.startswith("org.jobrun."):
        message = f"{message} ({name})"
    return cls(message, hint)


# The bus's own answer to a call whose destination is not there (and cannot be started): the call
# reached no one. jobrund never answers with it.
SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"


def reply_error(name: str | None, body: list[object] | tuple[object, ...]) -> JobrunError:
    """The JobrunError of an error reply to a call to jobrund (the bus's, when jobrund is not
    there to answer, included)."""
    if name == SERVICE_UNKNOWN:
        return SystemdUnavailable(
            "jobrund is not reachable on the system bus",
            "is the package installed? systemctl status jobrund",
        )
    return error_from_name(name, str(body[0]) if body else "")
