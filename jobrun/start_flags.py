"""`start`'s options for the fast CLI (fastcli.py), which must not import the settings
table (properties.SETTINGS, ~20 ms): packaging/gen-start-flags writes them from it.
Do not edit; tests/test_fast_cli.py fails while this is stale."""

# flag: (field, whether it repeats); --name is start's own
TAKES_VALUE = {
    "--name": ("name", False),
    "--cpu-weight": ("cpu_weight", False),
    "--memory-high": ("memory_high", False),
    "--memory-max": ("memory_max", False),
    "--io-weight": ("io_weight", False),
    "--tasks-max": ("tasks_max", False),
    "--cpu-quota": ("cpu_quota", False),
    "--cpu-affinity": ("cpu_affinity", False),
    "-E": ("env", True),
    "--env": ("env", True),
    "-C": ("workdir", False),
    "--workdir": ("workdir", False),
    "--stop-timeout": ("stop_timeout", False),
    "--profile": ("profile", False),
    "--writable": ("writable", True),
    "--timeout": ("timeout", False),
    "--group": ("group", False),
    "--priority": ("priority", False),
    "--after": ("after", False),
    "--retry": ("retry", False),
    "--retry-delay": ("retry_delay", False),
}
# flag: (field, the value it gives)
SWITCHES = {
    "--network": ("network", True),
    "--no-network": ("network", False),
    "--private-tmp": ("private_tmp", True),
    "--shared-tmp": ("private_tmp", False),
    "--after-any": ("after_any", True),
    "--after-success": ("after_any", False),
    "--retry-backoff": ("retry_backoff", True),
    "--no-retry-backoff": ("retry_backoff", False),
}
FIELDS = (
    "cpu_weight",
    "memory_high",
    "memory_max",
    "io_weight",
    "tasks_max",
    "cpu_quota",
    "cpu_affinity",
    "network",
    "private_tmp",
    "env",
    "workdir",
    "stop_timeout",
    "profile",
    "writable",
    "timeout",
    "group",
    "priority",
    "after",
    "after_any",
    "retry",
    "retry_delay",
    "retry_backoff",
)
