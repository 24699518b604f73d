"""The SIGBUS handler: a read past the end of a truncated mapped file must not kill us."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

SCRIPT = """
import mmap, os, sys, tempfile
{install}
with tempfile.TemporaryFile() as f:
    f.write(b"x" * 2 * mmap.PAGESIZE)
    f.flush()
    m = mmap.mmap(f.fileno(), 2 * mmap.PAGESIZE, prot=mmap.PROT_READ)
    assert m[mmap.PAGESIZE] == ord("x")
    os.ftruncate(f.fileno(), 0)  # what journald does to an archived file's tail
    print(m[mmap.PAGESIZE], m[0], flush=True)
{report}
"""


def run(install: bool) -> subprocess.CompletedProcess[str]:
    code = SCRIPT.format(
        install="import jobrun._sigbus as s; s.install(); s.install()" if install else "",
        report="print(s.faults())" if install else "",
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.unit
def test_without_the_handler_the_process_dies_of_sigbus() -> None:
    proc = run(install=False)
    assert proc.returncode in (-signal.SIGBUS, 128 + signal.SIGBUS), proc


@pytest.mark.unit
def test_with_the_handler_the_read_gives_zeros_and_is_counted() -> None:
    proc = run(install=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "0", "2"]
