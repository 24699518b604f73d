"""The option → unit property table, parsing and validation (no systemd needed)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from dbus_fast import Variant
from dbus_fast.signature import SignatureTree

from jobrun.errors import InvalidArgument
from jobrun.inputs import parse_size
from jobrun.model import JobSpec
from jobrun.properties import SETTINGS, as_input, build_spec, limits
from jobrun.unit import UnitContext, fixed_properties, unit_properties


def props(spec: JobSpec) -> dict[str, Any]:
    return {k: v.value for k, v in unit_properties("abc", spec)}


def test_every_setting_names_a_spec_field_and_a_valid_signature() -> None:
    fields = {f.name for f in dataclasses.fields(JobSpec)}
    for s in SETTINGS:
        assert s.field in fields
        SignatureTree(s.signature)  # raises on a bad signature
        assert s.flags.startswith("-") and s.help


@pytest.mark.parametrize(
    ("field", "text", "prop", "value"),
    [
        ("cpu_weight", "400", "CPUWeight", 400),
        ("memory_high", "512M", "MemoryHigh", 512 << 20),
        ("memory_max", "2G", "MemoryMax", 2 << 30),
        ("memory_max", "1.5G", "MemoryMax", 3 << 29),
        ("io_weight", "10000", "IOWeight", 10000),
        ("tasks_max", "17", "TasksMax", 17),
        ("cpu_quota", "150%", "CPUQuotaPerSecUSec", 1_500_000),
        ("cpu_affinity", "0,2-3", "CPUAffinity", bytes([0b1101])),
        ("network", True, "PrivateNetwork", False),
        ("private_tmp", False, "PrivateTmp", False),
        ("workdir", "/srv//data/", "WorkingDirectory", "/srv/data"),
        ("stop_timeout", "2.5", "TimeoutStopUSec", 2_500_000),
    ],
)
def test_option_reaches_its_property(field: str, text: Any, prop: str, value: Any) -> None:
    # Only the relaxed profile lets --shared-tmp through (see test_profiles.py).
    extra = {"profile": "relaxed"} if field == "private_tmp" else {}
    spec = build_spec(["true"], **{field: text}, **extra)
    assert props(spec)[prop] == value


def test_only_set_properties_plus_the_fixed_ones_are_sent() -> None:
    sent = props(build_spec(["true"]))
    fixed = {k for k, _ in fixed_properties("abc", build_spec(["true"]))}
    defaults = {s.prop for s in SETTINGS if s.default is not None}
    assert set(sent) == fixed | defaults
    assert sent["PrivateNetwork"] is True and sent["PrivateTmp"] is True
    assert sent["TimeoutStopUSec"] == 10_000_000
    assert sent["KillMode"] == "control-group" and sent["Slice"] == "jobrun.slice"
    assert sent["LogNamespace"] == "jobrun"
    assert sent["LogExtraFields"] == [b"JOBRUN_JOB=abc"]
    assert sent["ExecStart"] == [["true", ["true"], False]]
    dollars = props(build_spec(["sh", "-c", "echo $$ ${HOME}"]))["ExecStart"]
    assert dollars == [["sh", ["sh", "-c", "echo $$$$ $${HOME}"], False]]
    for acct in ("CPUAccounting", "MemoryAccounting", "IOAccounting", "TasksAccounting"):
        assert sent[acct] is True
    assert "CPUWeight" not in sent and "MemoryMax" not in sent


def test_env_goes_to_a_root_only_file_never_to_environment() -> None:
    # systemd shows Environment= to every local user; the file only root reads (envfile.py).
    spec = build_spec(["true"], env=["A=1", "B=x y"])
    sent = {
        k: v.value for k, v in unit_properties("abc", spec, UnitContext(env_file="/run/x/abc.env"))
    }
    assert "Environment" not in sent
    assert sent["EnvironmentFiles"] == [["/run/x/abc.env", False]]
    assert "EnvironmentFiles" not in props(build_spec(["true"]))


def test_user_is_sent_as_a_uid() -> None:
    # systemd reads an all-digit User= name as a UID: a user named "1003" is sent as its own UID.
    sent = {
        k: v.value for k, v in unit_properties("abc", build_spec(["true"]), UnitContext(user=1006))
    }
    assert sent["User"] == "1006"


def test_properties_marshal_as_dbus() -> None:
    spec = build_spec(["sh", "-c", "x"], cpu_weight="5", env=["A=1"], cpu_affinity="1")
    for name, v in unit_properties(
        "abc", spec, UnitContext(user=1001, env_file="/run/jobrun/env/abc.env")
    ):
        assert isinstance(v, Variant), name
        Variant(v.signature, v.value)  # re-validates value against signature


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("cpu_weight", "0"),
        ("cpu_weight", "10001"),
        ("cpu_weight", "-5"),
        ("cpu_weight", "1e3"),
        ("cpu_weight", "99999999999999999999999"),
        ("io_weight", "abc"),
        ("memory_max", "12Q"),
        ("memory_max", "-1G"),
        ("memory_max", "0"),
        ("memory_high", "huge"),
        ("memory_max", "99999999999P"),
        ("tasks_max", "0"),
        ("cpu_quota", "0%"),
        ("cpu_quota", "abc"),
        ("cpu_quota", "-50%"),
        ("cpu_affinity", "x"),
        ("cpu_affinity", "-1"),
        ("env", ["NOEQUALS"]),
        ("env", ["1BAD=x"]),
        ("env", ["A=b\x00c"]),
        ("env", ["BAD KEY=x"]),
        ("workdir", "relative/dir"),
        ("workdir", "/a\nb"),
        ("stop_timeout", "-1"),
        ("stop_timeout", "nan"),
        ("stop_timeout", "forever"),
        ("network", "maybe"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(field: str, bad: Any) -> None:
    with pytest.raises(InvalidArgument) as e:
        build_spec(["true"], **{field: bad})
    assert e.value.message and "Traceback" not in e.value.message


def test_bad_commands_and_names_are_refused() -> None:
    for command in ([], [""], ["a\x00b"], ["x" * 200_000]):
        with pytest.raises(InvalidArgument):
            build_spec(command)
    for name in ("", "x" * 65, "a\nb"):
        with pytest.raises(InvalidArgument):
            build_spec(["true"], name=name)
    with pytest.raises(InvalidArgument, match="unknown setting"):
        build_spec(["true"], user="root")
    with pytest.raises(InvalidArgument, match="memory-high"):
        build_spec(["true"], memory_high="2G", memory_max="1G")
    with pytest.raises(InvalidArgument, match="at most"):
        build_spec(["true"], env=[f"V{i}=x" for i in range(10_000)])


def test_sizes() -> None:
    assert parse_size("1024") == 1024
    assert parse_size("1K") == 1024 and parse_size("1k") == 1024
    assert parse_size("2GiB") == 2 << 30
    assert parse_size(4096) == 4096


def test_limits_lists_what_the_user_set() -> None:
    spec = build_spec(["true"], cpu_weight="7", env=["A=1"])
    assert limits(spec) == {"cpu_weight": 7, "env": ["A=1"]}


def test_a_specs_values_build_the_same_spec_again_through_as_input() -> None:
    # What gRPC's JobOptions carry: parsed values, as `limits` gives them. Each row's to_input
    # turns its value back into one its parser takes, so no front end special-cases a setting.
    spec = build_spec(
        ["true"], cpu_weight="5", memory_high="1G", memory_max="2G", io_weight="7",
        tasks_max="9", cpu_quota="150%", cpu_affinity="0,2-3", network=True, private_tmp=True,
        env=["A=1"], workdir="/srv", stop_timeout="2.5", profile="default", writable=["/srv"],
        timeout="30", group="build_1", priority="-3", after="abc,def0123456", after_any="yes",
        retry="2", retry_delay="1.5", retry_backoff=True,
    )  # fmt: skip
    values = limits(spec)
    assert set(values) == {s.field for s in SETTINGS}
    assert build_spec(["true"], **as_input(values)) == spec
    assert {s.field for s in SETTINGS if s.is_list} == {"cpu_affinity", "env", "writable", "after"}
    with pytest.raises(InvalidArgument, match="unknown setting"):
        build_spec(["true"], **as_input({"user": "root"}))
