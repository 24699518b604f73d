"""Isolation profiles as data: their rows, their order, validation, and the docs table."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Variant
from dbus_fast.signature import SignatureTree
from typer.testing import CliRunner

from jobrun import cli, profiles
from jobrun.cli import common
from jobrun.errors import InvalidArgument
from jobrun.properties import build_spec, check_paths, limits, unit_properties
from jobrun.store import spec_from_json, spec_to_json

from .conftest import ROOT


def props(spec: Any, user: int | None = None) -> dict[str, Any]:
    return {k: v.value for k, v in unit_properties("abc", spec, user)}


def test_profiles_are_ordered_from_most_to_least_isolated() -> None:
    assert profiles.names() == ["strict", "default", "relaxed"]
    assert profiles.rank("strict") < profiles.rank(None) < profiles.rank("relaxed")
    assert profiles.rank(None) == profiles.rank("default")
    # What a later admin cap will ask: is this choice no looser than the cap?
    assert profiles.within("strict", "default") and profiles.within("default", "default")
    assert not profiles.within("relaxed", "default")
    # Looser profiles take away less: each one's settings are a subset of the stricter one's.
    strict, default, relaxed = ({h.text for h in p.settings} for p in profiles.PROFILES)
    assert relaxed < default | strict and default - {profiles.FAMILIES.text} < strict


def test_every_row_is_well_formed() -> None:
    for p in profiles.PROFILES:
        props_seen = [h.prop for h in p.settings]
        assert p.summary and props_seen, p.name
        for h in p.settings:
            SignatureTree(h.signature)
            Variant(h.signature, h.value)  # the value marshals as its signature says
            assert h.prop and h.prop[0].isupper() and "=" in h.text, h
            assert h.why.strip() and h.instead.strip(), h
        # One row per property, except SystemCallFilter which systemd merges like a unit file.
        repeated = {x for x in props_seen if props_seen.count(x) > 1}
        assert repeated <= {"SystemCallFilter"}, (p.name, repeated)
        assert "PrivateNetwork" not in props_seen and "PrivateTmp" not in props_seen


def test_the_default_profile_reaches_the_properties() -> None:
    sent = props(build_spec(["true"]))
    for h in profiles.DEFAULT_PROFILE.settings:
        assert sent[h.prop] == h.value, h.text
    assert sent["DynamicUser"] is True and sent["ProtectSystem"] == "strict"
    assert sent["PrivateNetwork"] is True and sent["PrivateTmp"] is True


def test_a_job_of_a_user_runs_as_that_user_not_a_dynamic_one() -> None:
    sent = props(build_spec(["true"]), user=1001)
    assert sent["User"] == "1001" and "DynamicUser" not in sent
    assert sent["NoNewPrivileges"] is True and sent["ProtectSystem"] == "strict"


def test_relaxed_keeps_the_caller_and_only_a_few_protections() -> None:
    spec = build_spec(["true"], profile="relaxed", network=True, private_tmp=False)
    sent = props(spec)
    assert "DynamicUser" not in sent and "User" not in sent and "ProtectSystem" not in sent
    assert sent["PrivateNetwork"] is False and sent["PrivateTmp"] is False
    assert {h.prop for h in profiles.RELAXED.settings} <= set(sent)


def test_strict_sends_both_system_call_filters_in_order() -> None:
    sent = unit_properties("abc", build_spec(["true"], profile="strict"))
    filters = [v.value for k, v in sent if k == "SystemCallFilter"]
    assert filters == [[True, ["@system-service"]], [False, ["@privileged", "@resources"]]]
    families = [v.value for k, v in sent if k == "RestrictAddressFamilies"]
    assert families == [[True, ["AF_UNIX"]]]


@pytest.mark.parametrize("text", ["STRICT", " default ", "relaxed"])
def test_profile_names_are_parsed(text: str) -> None:
    assert build_spec(["true"], profile=text).profile == text.strip().lower()


def test_unknown_profile_lists_the_profiles() -> None:
    with pytest.raises(InvalidArgument) as e:
        build_spec(["true"], profile="lax")
    assert "unknown profile 'lax'" in e.value.message
    assert "strict, default, relaxed" in e.value.hint


def test_writable_paths_reach_read_write_paths() -> None:
    spec = build_spec(["true"], writable=["/usr//lib/", "/etc"])
    assert spec.writable == ("/usr/lib", "/etc")
    assert props(spec)["ReadWritePaths"] == ["/usr/lib", "/etc"]
    assert limits(spec)["writable"] == ["/usr/lib", "/etc"]
    assert "ReadWritePaths" not in props(build_spec(["true"]))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"writable": ["relative"]}, "absolute path"),
        ({"writable": ["/"]}, "whole system"),
        ({"writable": ["/proc/sys"]}, "kernel interface"),
        ({"writable": ["/sys"]}, "kernel interface"),
        ({"writable": ["/dev/shm"]}, "kernel interface"),
        ({"writable": ["/tmp"]}, "private /tmp"),
        ({"writable": ["/var/tmp"]}, "private /tmp"),
        ({"private_tmp": False}, "--shared-tmp needs --profile relaxed"),
        ({"private_tmp": False, "profile": "strict"}, "--shared-tmp needs --profile relaxed"),
        ({"network": True, "profile": "strict"}, "--network"),
        ({"writable": ["/usr"] * 65}, "at most"),
    ],
)
def test_what_a_profile_cannot_give_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        build_spec(["true"], **values)
    assert message in e.value.message


def _home(spec: Any, user: int | None, home: str | None = None, dynamic: bool = False) -> Any:
    """The rows as (property, value), binds as the tuple of their paths."""
    rows = profiles.home_properties(spec, user=user, dynamic_user=dynamic, home=home)
    out = set()
    for k, signature, v in rows:
        if signature == "a(ssbt)":
            assert all(src == dst and not missing_ok for src, dst, missing_ok, _ in v)
            v = [src for src, *_ in v]
        out.add((k, tuple(v) if isinstance(v, list) else v))
    return out


def test_a_users_job_working_in_their_home_sees_it_and_no_other() -> None:
    spec = build_spec(["make"], workdir="/home/alice/proj", writable=["/home/alice/out"])
    assert _home(spec, 1001, "/home/alice") == {
        ("ProtectHome", "tmpfs"),
        ("BindReadOnlyPaths", ("/home/alice",)),
        ("ReadWritePaths", ("-/home/alice/proj",)),
    }
    sent = unit_properties("abc", spec, 1001, home="/home/alice")
    rw = [p for k, v in sent if k == "ReadWritePaths" for p in v.value]
    assert rw == ["-/home/alice/proj", "-/home/alice/out"]
    assert [v.value for k, v in sent if k == "ProtectHome"] == ["tmpfs"]
    for where in ("/home/bob/proj", "/root", "/run/user/1002"):
        with pytest.raises(InvalidArgument, match="other than yours"):
            profiles.home_properties(
                build_spec(["true"], workdir=where), user=1001, dynamic_user=False,
                home="/home/alice",
            )  # fmt: skip
    with pytest.raises(InvalidArgument, match="no home there"):  # a home outside /home
        _home(spec, 1001, "/srv/alice")
    # Working elsewhere: every home stays hidden, the user's own too.
    assert _home(build_spec(["true"], workdir="/srv"), 1001, "/home/alice") == {
        ("ProtectHome", "yes")
    }
    relaxed = build_spec(["true"], workdir="/home/bob", profile="relaxed")
    assert _home(relaxed, 1001, "/home/alice") == set()


def test_a_root_job_sees_only_its_working_directory_in_a_home() -> None:
    spec = build_spec(["make"], workdir="/root/proj", writable=["/home/alice/out"])
    assert _home(spec, None) == {
        ("ProtectHome", "tmpfs"),
        ("BindReadOnlyPaths", ("/root/proj",)),
        ("BindPaths", ("/home/alice/out",)),
    }
    inside = build_spec(["make"], workdir="/root/proj/src", writable=["/root/proj"])
    assert _home(inside, None) == {("ProtectHome", "tmpfs"), ("BindPaths", ("/root/proj",))}
    # A remote caller's dynamic UID has no home here.
    with pytest.raises(InvalidArgument, match="no home there"):
        _home(spec, None, dynamic=True)


def test_missing_paths_are_refused_by_the_callers_own_check() -> None:
    # build_spec does not look at the file system (in jobrund it runs as root: it would tell a
    # caller which paths exist); the CLI checks as the caller, systemd as the job's user.
    spec = build_spec(["true"], writable=["/nonexistent-jobrun-path"])
    with pytest.raises(InvalidArgument, match="no such file"):
        check_paths(spec)
    with pytest.raises(InvalidArgument, match="no such directory"):
        check_paths(build_spec(["true"], workdir="/nonexistent-jobrun-path"))
    check_paths(build_spec(["true"], writable=["/usr"], workdir="/usr"))


def test_relaxed_may_have_the_hosts_tmp_home_and_network() -> None:
    spec = build_spec(["true"], profile="relaxed", private_tmp=False, network=True,
                      writable=["/tmp", "/root"], workdir="/root")  # fmt: skip
    assert spec.writable == ("/tmp", "/root")
    assert build_spec(["true"], network=True).network is True  # default allows --network


def test_a_spec_with_a_profile_round_trips_and_old_records_mean_default() -> None:
    spec = build_spec(["true"], profile="strict", writable=["/usr"])
    assert spec_from_json(spec_to_json(spec)) == spec
    old = spec_from_json('{"command": ["true"], "network": null}')
    assert (
        old.profile is None and old.writable == () and profiles.get(old.profile).name == "default"
    )


def test_cli_offers_and_validates_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse() -> None:
        raise AssertionError("bad input must not reach the manager")

    monkeypatch.setattr(common, "open_backend", refuse)
    runner = CliRunner()
    help_text = runner.invoke(cli.app, ["start", "--help"], terminal_width=200).output
    assert "--profile" in help_text and "--writable" in help_text
    for args in (["--profile", "lax"], ["--shared-tmp"], ["--writable", "/nonexistent-x"]):
        result = runner.invoke(cli.app, ["start", *args, "--", "true"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_docs_carry_the_table_of_every_setting() -> None:
    doc = (ROOT / "docs" / "ISOLATION.md").read_text()
    assert profiles.markdown_table() in doc, "regenerate with: python -m jobrun.profiles"
    for p in profiles.PROFILES:
        assert f"`{p.name}`" in doc


def test_table_marks_which_profile_has_what() -> None:
    table = profiles.markdown_table()
    line = next(x for x in table.splitlines() if x.startswith("| `DynamicUser=yes`"))
    assert "(root-started jobs) | ✓ | ✓ |  |" in line
    line = next(x for x in table.splitlines() if x.startswith("| `ProtectKernelModules=yes`"))
    assert "| ✓ | ✓ | ✓ |" in line
