"""Images whose /etc, /usr/etc, /var, kernel or os-release are symlinks to host paths.

Each image is committed with ``strata commit`` from a directory (symlinks are
content), deployed with the real CLI, and a canary directory outside the
sysroot shows that nothing was read from or written to where the symlinks point.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.boot.conftest import make_tree
from tests.util import StrataRunner

pytestmark = pytest.mark.integration

HOST_FILES = {"canary": "untouched\n", "motd": "host motd\n", "gone.conf": "host gone\n",
              "vmlinuz": "HOST KERNEL\n", "os-release": 'PRETTY_NAME="HOST SECRET"\n'}


@pytest.fixture
def host(work: Path) -> Path:
    """A directory standing for the host's /etc (same filesystem: links would succeed)."""
    d = work / "host"
    d.mkdir()
    for name, text in HOST_FILES.items():
        (d / name).write_text(text)
    return d


def assert_host_untouched(host: Path) -> None:
    assert {p.name: p.read_text() for p in host.iterdir()} == HOST_FILES


def commit_tree(strata: StrataRunner, sysroot: Path, tree: Path) -> str:
    return strata("--repo", sysroot / "ostree/repo", "commit", "-b", "os/x",
                  "--timestamp", "1700000000", tree).stdout.strip()


def new_sysroot(strata: StrataRunner, work: Path) -> Path:
    s = work / "sysroot"
    strata("--sysroot", s, "os-init", "testos")
    return s


def replace_with_symlink(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def deployed_with_user_edits(strata: StrataRunner, work: Path) -> Path:
    """A sysroot with one deployment whose /etc the user changed: motd and ssl/gone.conf
    removed, added.conf added."""
    s = new_sysroot(strata, work)
    v1 = make_tree(work / "v1", etc={"ssl/keep.conf": "k\n", "ssl/gone.conf": "g\n"})
    commit_tree(strata, s, v1)
    strata("--sysroot", s, "deploy", "os/x")
    (dep,) = [p for p in (s / "ostree/deploy/testos/deploy").iterdir() if p.is_dir()]
    (dep / "etc/motd").unlink()
    (dep / "etc/ssl/gone.conf").unlink()
    (dep / "etc/added.conf").write_text("user\n")
    return s


def one_error(p: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert pattern in lines[0], lines[0]


def deployments(s: Path) -> list[Path]:
    return [p for p in (s / "ostree/deploy/testos/deploy").iterdir() if p.is_dir()]


@pytest.mark.parametrize("where", ["usr/etc", "etc"])
def test_etc_symlink_to_host_is_refused(where: str, work: Path, host: Path,
                                        strata: StrataRunner) -> None:
    s = deployed_with_user_edits(strata, work)
    v2 = make_tree(work / "v2", version="2")
    shutil.rmtree(v2 / "usr/etc")
    replace_with_symlink(v2 / where, host)
    commit_tree(strata, s, v2)
    p = strata("--sysroot", s, "deploy", "os/x", check=False)
    one_error(p, f"/{where} is not a directory")
    assert len(deployments(s)) == 1
    assert_host_untouched(host)


def test_symlink_inside_usr_etc_is_content(work: Path, host: Path,
                                           strata: StrataRunner) -> None:
    """usr/etc/ssl -> host: the user's removal of etc/ssl/gone.conf does not reach the host."""
    s = deployed_with_user_edits(strata, work)
    v2 = make_tree(work / "v2", version="2")
    replace_with_symlink(v2 / "usr/etc/ssl", host)
    commit_tree(strata, s, v2)
    strata("--sysroot", s, "deploy", "os/x")
    (new,) = [d for d in deployments(s) if (d / "etc/ssl").is_symlink()]
    assert (new / "etc/added.conf").read_text() == "user\n"
    assert not (new / "etc/motd").exists()
    assert_host_untouched(host)


def test_var_symlink_to_host_is_not_copied(work: Path, host: Path,
                                           strata: StrataRunner) -> None:
    s = new_sysroot(strata, work)
    tree = make_tree(work / "v1")
    replace_with_symlink(tree / "var", host)
    commit_tree(strata, s, tree)
    strata("--sysroot", s, "deploy", "os/x")
    assert list((s / "ostree/deploy/testos/var").iterdir()) == []
    (dep,) = deployments(s)
    assert (dep / "var").is_symlink()
    assert_host_untouched(host)


@pytest.mark.parametrize("where", ["usr/lib/modules/6.1.0-test/vmlinuz",
                                   "usr/lib/modules/6.1.0-test", "usr/lib/modules"])
def test_kernel_through_symlink_is_refused(where: str, work: Path, host: Path,
                                           strata: StrataRunner) -> None:
    s = new_sysroot(strata, work)
    tree = make_tree(work / "v1")
    if where.endswith("vmlinuz"):
        (tree / where).unlink()
        (tree / where).symlink_to(host / "vmlinuz")
    elif where.endswith("modules"):  # the host's own modules directory, with a kernel
        (work / "hostmods/6.1.0-host").mkdir(parents=True)
        (work / "hostmods/6.1.0-host/vmlinuz").write_text(HOST_FILES["vmlinuz"])
        replace_with_symlink(tree / where, work / "hostmods")
    else:
        replace_with_symlink(tree / where, host)
    commit_tree(strata, s, tree)
    p = strata("--sysroot", s, "deploy", "os/x", check=False)
    one_error(p, "no kernel in")
    boot_files = [q for q in (s / "boot").rglob("*") if q.is_file()]
    assert not any(b"HOST KERNEL" in q.read_bytes() for q in boot_files)
    assert deployments(s) == []
    assert_host_untouched(host)


def test_os_release_symlink_is_not_read(work: Path, host: Path, strata: StrataRunner) -> None:
    s = new_sysroot(strata, work)
    tree = make_tree(work / "v1")
    (tree / "usr/lib/os-release").unlink()
    (tree / "usr/lib/os-release").symlink_to(host / "os-release")
    commit_tree(strata, s, tree)
    strata("--sysroot", s, "deploy", "os/x")
    entries = list((s / "boot/loader/entries").iterdir())
    assert entries and not any("HOST SECRET" in e.read_text() for e in entries)
    assert_host_untouched(host)
