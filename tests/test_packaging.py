"""The Debian packaging agrees with the code: versions, man page, installed files, unit safety.

Building and installing the package is packaging/build-deb and packaging/test-deb (.ci/run runs
both); these checks are the cheap part that catches drift on every test run.
"""

from __future__ import annotations

import re
import tomllib

import pytest

from jobrun import __version__, cli
from jobrun.properties import SETTINGS, Setting

from .conftest import ROOT

DEBIAN = ROOT / "packaging" / "debian"
MAN1 = ROOT / "docs" / "man" / "jobrun.1.md"


def _man_text() -> str:
    return MAN1.read_text().replace("\\-", "-")


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_versions_agree() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.fullmatch(r"jobrun \(([^)]+)\) \S+; urgency=\w+", first)
    assert m, first
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert m.group(1) == __version__ == pyproject["project"]["version"], (
        "add a packaging/debian/changelog entry for the new version"
    )


def test_man_page_documents_every_command() -> None:
    text = _man_text()
    commands = cli.app.registered_commands
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in commands]
    missing = [n for n in names if not re.search(rf"^\*\*{re.escape(n)}\*\*", text, re.M)]
    assert not missing, f"docs/man/jobrun.1.md has no entry for: {missing}"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
def test_man_page_documents_every_option(setting: Setting) -> None:
    flags = [f for f in setting.flags.split("/") if f.startswith("-")]
    text = _man_text()
    missing = [f for f in flags if not _mentions(text, f)]
    assert not missing, f"docs/man/jobrun.1.md does not mention {missing}"


def test_every_installed_file_exists() -> None:
    for line in (DEBIAN / "install").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        src = line.split()[0]
        if src.startswith("debian/generated/"):
            continue  # made by debian/rules at build time
        assert (ROOT / src).is_file(), f"packaging/debian/install names a missing file: {src}"
    for doc in (DEBIAN / "docs").read_text().split():
        assert (ROOT / doc).is_file(), f"packaging/debian/docs names a missing file: {doc}"
    for page in (DEBIAN / "manpages").read_text().split():
        name = page.removeprefix("debian/generated/")
        assert (ROOT / "docs" / "man" / f"{name}.md").is_file(), name


def test_maintainer_scripts_never_touch_jobs() -> None:
    """Stopping or restarting jobrun.slice, or any jobrun-*.service, would end running jobs."""
    for script in ("postinst", "prerm", "postrm"):
        for line in (DEBIAN / script).read_text().splitlines():
            code = line.split("#", 1)[0]
            assert "jobrun.slice" not in code, f"{script}: {line}"
            if re.search(r"\b(stop|restart|try-restart|kill|start)\b", code):
                units = re.findall(r"[\w@.*'-]+\.(?:service|socket|slice)", code)
                assert all("jobrun-" not in u for u in units), f"{script}: {line}"


def test_the_journald_config_a_pip_install_carries_is_the_packages() -> None:
    # jobrun/ holds a copy for in-process root without the package (journald_conf.py installs
    # it); the package installs units/'s as a conffile. One text, two places: kept equal here.
    packaged = (ROOT / "units" / "journald@jobrun.conf").read_bytes()
    assert (ROOT / "jobrun" / "journald@jobrun.conf").read_bytes() == packaged


GRPCLIB = ROOT / "packaging" / "grpclib" / "debian"
BUILD_GRPCLIB = ROOT / "packaging" / "build-grpclib-deb"


def _control_field(control: str, field: str) -> set[str]:
    """The package names in a field of a debian/control (all paragraphs; one relation a line)."""
    names: set[str] = set()
    for m in re.finditer(rf"^{field}:\n((?: .*\n)+)", control, re.M):
        names |= {line.split()[0].rstrip(",") for line in m.group(1).splitlines()}
    return names


def test_grpclib_pin_changelog_and_copyright_agree() -> None:
    """build-grpclib-deb builds the pinned release; its changelog and copyright name it."""
    script = BUILD_GRPCLIB.read_text()
    version = re.search(r"^VERSION=(\S+)$", script, re.M)
    sha256 = re.search(r"^SHA256=(\S+)$", script, re.M)
    assert version and sha256, "packaging/build-grpclib-deb must pin VERSION= and SHA256="
    assert re.fullmatch(r"[0-9a-f]{64}", sha256.group(1)), sha256.group(1)
    assert "--require-hashes" in script and "sha256sum --check" in script
    first = (GRPCLIB / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"python-grpclib ({version.group(1)}-"), first
    copyright = (GRPCLIB / "copyright").read_text()
    assert copyright.startswith("Format: https://www.debian.org/doc/packaging-manuals/")
    assert f"grpclib-{version.group(1)}.tar.gz" in copyright


def test_grpclib_copyright_names_every_license_it_uses() -> None:
    """DEP-5: grpclib is BSD-3-Clause (its LICENSE.txt: Copyright (c) 2019, Volodymyr
    Magamedov); each license a Files paragraph names has its own stand-alone paragraph."""
    text = (GRPCLIB / "copyright").read_text()
    paragraphs = text.split("\n\n")
    main = next(p for p in paragraphs if p.startswith("Files: *\n"))
    assert "Copyright: 2019 Volodymyr Magamedov" in main and "License: BSD-3-Clause" in main
    used = {
        name
        for p in paragraphs
        if p.startswith("Files:")
        for m in re.finditer(r"^License: (.+)$", p, re.M)
        for name in m.group(1).split(" and ")
    }
    defined = {
        p.split("\n")[0].removeprefix("License: ") for p in paragraphs if p.startswith("License:")
    }
    assert used <= defined, f"no License paragraph for {used - defined}"


def test_jobrun_recommends_what_the_remote_api_imports() -> None:
    """The remote API comes from apt alone: jobrun recommends grpclib's package (built by
    packaging/build-grpclib-deb), protobuf and cryptography; python3-grpclib depends on
    Debian's h2 and multidict (nothing vendored)."""
    recommends = _control_field((DEBIAN / "control").read_text(), "Recommends")
    assert {"python3-grpclib", "python3-protobuf", "python3-cryptography"} <= recommends
    grpclib = (GRPCLIB / "control").read_text()
    assert "Package: python3-grpclib\n" in grpclib
    assert {"python3-h2", "${python3:Depends}"} <= _control_field(grpclib, "Depends")
    assert "python3-h2 (<< 5)" in grpclib  # grpclib's install_requires: h2 < 5
