"""Kernel arguments that would break a BLS ``options`` line (a newline injecting a second
``linux`` line, other control characters, an unbalanced quote) are refused; the boot
entries stay as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from boot.kargs import Kargs, KargsError, check_arg
from tests.boot.conftest import make_tree, ostree_commit
from tests.util import StrataRunner

pytestmark = pytest.mark.integration

HOSTILE = ["a\nlinux /x", "quiet\r\ninitrd /evil", "a\x00b", "tab\there", "esc\x1b[2J",
           "nel\x85x", "ls\u2028x", 'console="tty0', "two args", ""]


def _boot_snapshot(s: Path) -> dict[str, str]:
    return {str(p.relative_to(s)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((s / "boot").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("arg", HOSTILE)
def test_check_arg_refuses(arg: str) -> None:
    with pytest.raises(KargsError):
        check_arg(arg)
    with pytest.raises(KargsError):
        Kargs(("quiet",)).append(arg)
    with pytest.raises(KargsError):
        Kargs(("quiet",)).replace(arg)


def test_check_arg_accepts_quoted_spaces() -> None:
    assert Kargs(()).append('console="tty0 ttyS0"').append("x=ü").to_text() == \
        'console="tty0 ttyS0" x=ü'


def test_cli_kargs_and_deploy_karg_refuse_line_breaks(work: Path, strata: StrataRunner) -> None:
    s = work / "sysroot"
    strata("--sysroot", s, "os-init", "testos")
    ostree_commit(s / "ostree/repo", make_tree(work / "v1"), "os/x", 1700000001)
    strata("--sysroot", s, "deploy", "--karg", "quiet", "os/x")
    before = _boot_snapshot(s)
    for argv in (["kargs", "--append", "a\nlinux /x"], ["kargs", "--append", "b\x07"],
                 ["deploy", "--karg", "root=/dev/vda\ninitrd /evil", "os/x"],
                 ["deploy", "--karg", "c\x1b", "os/x"]):
        proc = strata("--sysroot", s, *argv, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: kernel argument "), proc.stderr
    assert _boot_snapshot(s) == before
    assert strata("--sysroot", s, "kargs").stdout.strip() == "quiet"
    strata("--sysroot", s, "kargs", "--append", "x=1")  # later commands still work
    assert strata("--sysroot", s, "kargs").stdout.strip() == "quiet x=1"
