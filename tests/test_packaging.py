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
