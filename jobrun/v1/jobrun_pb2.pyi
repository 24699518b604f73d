from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
JOB_STATE_FAILED: JobState
JOB_STATE_PAUSED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_STOPPED: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_UNSPECIFIED: JobState
LINE_BREAK_EOF: LineBreak
LINE_BREAK_LINE_MAX: LineBreak
LINE_BREAK_NEWLINE: LineBreak
LINE_BREAK_NUL: LineBreak
LINE_BREAK_PID_CHANGE: LineBreak
LINE_BREAK_UNSPECIFIED: LineBreak

class Accounting(_message.Message):
    __slots__ = ["cpu_seconds", "io_read_bytes", "io_write_bytes", "memory_peak_bytes", "sampled_at", "tasks_peak"]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IO_READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    IO_WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    TASKS_PEAK_FIELD_NUMBER: _ClassVar[int]
    cpu_seconds: float
    io_read_bytes: int
    io_write_bytes: int
    memory_peak_bytes: int
    sampled_at: _timestamp_pb2.Timestamp
    tasks_peak: int
    def __init__(self, cpu_seconds: _Optional[float] = ..., memory_peak_bytes: _Optional[int] = ..., io_read_bytes: _Optional[int] = ..., io_write_bytes: _Optional[int] = ..., tasks_peak: _Optional[int] = ..., sampled_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ["limits", "name", "owner", "parallel", "paused", "queued", "running"]
    class LimitsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.ScalarMap[str, int]
    name: str
    owner: str
    parallel: int
    paused: bool
    queued: int
    running: int
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., parallel: _Optional[int] = ..., paused: bool = ..., limits: _Optional[_Mapping[str, int]] = ..., queued: _Optional[int] = ..., running: _Optional[int] = ...) -> None: ...

class GroupSetRequest(_message.Message):
    __slots__ = ["name", "options"]
    class OptionsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    options: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GroupSetResponse(_message.Message):
    __slots__ = ["group"]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: Group
    def __init__(self, group: _Optional[_Union[Group, _Mapping]] = ...) -> None: ...

class GroupsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GroupsResponse(_message.Message):
    __slots__ = ["groups"]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[Group]
    def __init__(self, groups: _Optional[_Iterable[_Union[Group, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ["accounting", "attempt", "attempts", "command", "created_at", "exit_code", "finished_at", "id", "invocation_id", "kind", "limits", "live_limits", "name", "owner", "reason", "reported_by", "result", "schedule", "signal", "started_at", "state", "terminal", "uid", "unit", "usage"]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    LIVE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    accounting: Accounting
    attempt: int
    attempts: _containers.RepeatedScalarFieldContainer[str]
    command: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    exit_code: int
    finished_at: _timestamp_pb2.Timestamp
    id: str
    invocation_id: str
    kind: str
    limits: JobOptions
    live_limits: JobOptions
    name: str
    owner: str
    reason: str
    reported_by: str
    result: str
    schedule: str
    signal: str
    started_at: _timestamp_pb2.Timestamp
    state: JobState
    terminal: bool
    uid: int
    unit: str
    usage: Usage
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., unit: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., exit_code: _Optional[int] = ..., signal: _Optional[str] = ..., result: _Optional[str] = ..., reason: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., uid: _Optional[int] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., invocation_id: _Optional[str] = ..., limits: _Optional[_Union[JobOptions, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., live_limits: _Optional[_Union[JobOptions, _Mapping]] = ..., accounting: _Optional[_Union[Accounting, _Mapping]] = ..., kind: _Optional[str] = ..., reported_by: _Optional[str] = ..., schedule: _Optional[str] = ..., terminal: bool = ..., attempt: _Optional[int] = ..., attempts: _Optional[_Iterable[str]] = ...) -> None: ...

class JobOptions(_message.Message):
    __slots__ = ["after", "after_any", "cpu_affinity", "cpu_quota", "cpu_weight", "env", "group", "io_weight", "memory_high", "memory_max", "network", "priority", "private_tmp", "profile", "retry", "retry_backoff", "retry_delay", "stop_timeout", "tasks_max", "timeout", "workdir", "writable"]
    AFTER_ANY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    CPU_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    CPU_QUOTA_FIELD_NUMBER: _ClassVar[int]
    CPU_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    IO_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_HIGH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MAX_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_TMP_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    STOP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TASKS_MAX_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_FIELD_NUMBER: _ClassVar[int]
    after: _containers.RepeatedScalarFieldContainer[str]
    after_any: bool
    cpu_affinity: _containers.RepeatedScalarFieldContainer[int]
    cpu_quota: int
    cpu_weight: int
    env: _containers.RepeatedScalarFieldContainer[str]
    group: str
    io_weight: int
    memory_high: int
    memory_max: int
    network: bool
    priority: int
    private_tmp: bool
    profile: str
    retry: int
    retry_backoff: bool
    retry_delay: float
    stop_timeout: float
    tasks_max: int
    timeout: float
    workdir: str
    writable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cpu_weight: _Optional[int] = ..., memory_high: _Optional[int] = ..., memory_max: _Optional[int] = ..., io_weight: _Optional[int] = ..., tasks_max: _Optional[int] = ..., cpu_quota: _Optional[int] = ..., cpu_affinity: _Optional[_Iterable[int]] = ..., network: bool = ..., private_tmp: bool = ..., env: _Optional[_Iterable[str]] = ..., workdir: _Optional[str] = ..., stop_timeout: _Optional[float] = ..., profile: _Optional[str] = ..., writable: _Optional[_Iterable[str]] = ..., timeout: _Optional[float] = ..., group: _Optional[str] = ..., priority: _Optional[int] = ..., after: _Optional[_Iterable[str]] = ..., after_any: bool = ..., retry: _Optional[int] = ..., retry_delay: _Optional[float] = ..., retry_backoff: bool = ...) -> None: ...

class KillRequest(_message.Message):
    __slots__ = ["id", "signal"]
    ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    signal: int
    def __init__(self, id: _Optional[str] = ..., signal: _Optional[int] = ...) -> None: ...

class KillResponse(_message.Message):
    __slots__ = ["job", "was_running"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    WAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    job: Job
    was_running: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., was_running: bool = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ["all"]
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: bool = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ["jobs"]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ["schedules"]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ["after_cursor", "follow", "id", "since", "tail"]
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    after_cursor: str
    follow: bool
    id: str
    since: _timestamp_pb2.Timestamp
    tail: int
    def __init__(self, id: _Optional[str] = ..., follow: bool = ..., after_cursor: _Optional[str] = ..., tail: _Optional[int] = ..., since: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LogsResponse(_message.Message):
    __slots__ = ["records"]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ["id"]
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class PauseResponse(_message.Message):
    __slots__ = ["job"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ["cursor", "line_break", "message", "timestamp"]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LINE_BREAK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    line_break: LineBreak
    message: bytes
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, timestamp: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., cursor: _Optional[str] = ..., message: _Optional[bytes] = ..., line_break: _Optional[_Union[LineBreak, str]] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ["id"]
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ["job"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ["start", "stdin"]
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    start: StartRequest
    stdin: bytes
    def __init__(self, start: _Optional[_Union[StartRequest, _Mapping]] = ..., stdin: _Optional[bytes] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ["job"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ["calendar", "catch_up", "command", "created_at", "events", "id", "last_run", "limits", "name", "next_run", "once", "owner", "timer", "uid"]
    CALENDAR_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_FIELD_NUMBER: _ClassVar[int]
    ONCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TIMER_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    calendar: str
    catch_up: bool
    command: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    events: _containers.RepeatedCompositeFieldContainer[ScheduleEvent]
    id: str
    last_run: ScheduleEvent
    limits: JobOptions
    name: str
    next_run: _timestamp_pb2.Timestamp
    once: bool
    owner: str
    timer: str
    uid: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., timer: _Optional[str] = ..., calendar: _Optional[str] = ..., once: bool = ..., catch_up: bool = ..., command: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., uid: _Optional[int] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., next_run: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_run: _Optional[_Union[ScheduleEvent, _Mapping]] = ..., events: _Optional[_Iterable[_Union[ScheduleEvent, _Mapping]]] = ..., limits: _Optional[_Union[JobOptions, _Mapping]] = ...) -> None: ...

class ScheduleEvent(_message.Message):
    __slots__ = ["at", "count", "job", "kind", "note", "until"]
    AT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    count: int
    job: str
    kind: str
    note: str
    until: _timestamp_pb2.Timestamp
    def __init__(self, at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., job: _Optional[str] = ..., count: _Optional[int] = ..., until: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class ScheduleIdRequest(_message.Message):
    __slots__ = ["id"]
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ScheduleRequest(_message.Message):
    __slots__ = ["at", "catch_up", "every", "in_seconds", "start"]
    AT_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_FIELD_NUMBER: _ClassVar[int]
    EVERY_FIELD_NUMBER: _ClassVar[int]
    IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    catch_up: bool
    every: str
    in_seconds: float
    start: StartRequest
    def __init__(self, start: _Optional[_Union[StartRequest, _Mapping]] = ..., at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., in_seconds: _Optional[float] = ..., every: _Optional[str] = ..., catch_up: bool = ...) -> None: ...

class ScheduleResponse(_message.Message):
    __slots__ = ["schedule"]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: Schedule
    def __init__(self, schedule: _Optional[_Union[Schedule, _Mapping]] = ...) -> None: ...

class SetRequest(_message.Message):
    __slots__ = ["id", "options"]
    ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    options: JobOptions
    def __init__(self, id: _Optional[str] = ..., options: _Optional[_Union[JobOptions, _Mapping]] = ...) -> None: ...

class SetResponse(_message.Message):
    __slots__ = ["job"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ["command", "name", "options"]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    command: _containers.RepeatedScalarFieldContainer[str]
    name: str
    options: JobOptions
    def __init__(self, command: _Optional[_Iterable[str]] = ..., name: _Optional[str] = ..., options: _Optional[_Union[JobOptions, _Mapping]] = ...) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ["job"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ["id"]
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ["job"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ["id", "timeout"]
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    timeout: float
    def __init__(self, id: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class StopResponse(_message.Message):
    __slots__ = ["job", "was_running"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    WAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    job: Job
    was_running: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., was_running: bool = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ["cpu_seconds", "io_read_bytes", "io_write_bytes", "memory_bytes", "tasks"]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IO_READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    IO_WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    cpu_seconds: float
    io_read_bytes: int
    io_write_bytes: int
    memory_bytes: int
    tasks: int
    def __init__(self, cpu_seconds: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., tasks: _Optional[int] = ..., io_read_bytes: _Optional[int] = ..., io_write_bytes: _Optional[int] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ["samples"]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[UsageSample]
    def __init__(self, samples: _Optional[_Iterable[_Union[UsageSample, _Mapping]]] = ...) -> None: ...

class UsageSample(_message.Message):
    __slots__ = ["at", "cpu_seconds", "group", "id", "io_read_bytes", "io_write_bytes", "memory_bytes", "memory_max", "state", "tasks", "user"]
    AT_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    IO_READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    IO_WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MAX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    at: float
    cpu_seconds: float
    group: str
    id: str
    io_read_bytes: int
    io_write_bytes: int
    memory_bytes: int
    memory_max: int
    state: str
    tasks: int
    user: str
    def __init__(self, id: _Optional[str] = ..., user: _Optional[str] = ..., state: _Optional[str] = ..., at: _Optional[float] = ..., cpu_seconds: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., memory_max: _Optional[int] = ..., tasks: _Optional[int] = ..., io_read_bytes: _Optional[int] = ..., io_write_bytes: _Optional[int] = ..., group: _Optional[str] = ...) -> None: ...

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class LineBreak(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
