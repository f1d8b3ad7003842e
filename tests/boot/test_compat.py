"""strata and real `ostree admin` read and extend each other's sysroots."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from boot.admin import pin, rollback, status
from boot.bls import BlsEntry
from boot.deploy import deploy, os_init
from boot.sysroot import Sysroot
from tests.boot.conftest import make_tree, ostree_admin, ostree_commit, ostree_sysroot
from tests.util import run

pytestmark = pytest.mark.integration


def ostree_status(sysroot: Path) -> list[tuple[str, str, int, bool]]:
    """(stateroot, csum, serial, pinned) per deployment, in ostree's order."""
    out = ostree_admin("status", f"--sysroot={sysroot}").stdout
    rows: list[tuple[str, str, int, bool]] = []
    for line in out.splitlines():
        m = re.match(r"^[* ] (\S+) ([0-9a-f]{64})\.(\d+)", line)
        if m:
            rows.append((m.group(1), m.group(2), int(m.group(3)), False))
        elif "Pinned: yes" in line:
            rows[-1] = (*rows[-1][:3], True)
    return rows


def strata_rows(sysroot: Path) -> list[tuple[str, str, int, bool]]:
    return [(r.deployment.stateroot, r.deployment.checksum, r.deployment.deployserial,
             r.deployment.pinned) for r in status(Sysroot(sysroot))]


def new_strata_sysroot(work: Path) -> tuple[Sysroot, Path]:
    s = Sysroot(work / "sysroot")
    os_init(s, "testos")
    return s, s.repo_path


def test_ostree_status_lists_strata_deployments(work: Path) -> None:
    s, repo = new_strata_sysroot(work)
    csums = []
    for v in range(1, 4):
        csums.append(ostree_commit(repo, make_tree(work / f"v{v}", version=str(v)), "os/x",
                                   1700000000 + v))
        deploy(s, refspec="os/x")
        if v == 1:
            pin(s, 0)
    rows = ostree_status(s.path)
    assert rows == strata_rows(s.path)
    # v3 default, v2 rollback, v1 pinned: the same retention as ostree admin deploy
    assert [r[1] for r in rows] == [csums[2], csums[1], csums[0]]
    assert rows[2][3] is True
    rollback(s)
    assert [r[1] for r in ostree_status(s.path)] == [csums[1], csums[2], csums[0]]
    assert ostree_status(s.path) == strata_rows(s.path)
    ostree_admin("kargs", f"--sysroot={s.path}", "edit-in-place",
                 "--append-if-missing=console=ttyS0")
    assert all(d.kargs.get("console") == "ttyS0" for d in s.load().deployments)


def test_ostree_admin_deploy_works_on_strata_sysroot(work: Path) -> None:
    s, repo = new_strata_sysroot(work)
    c1 = ostree_commit(repo, make_tree(work / "v1"), "os/x", 1700000001)
    deploy(s, refspec="os/x", karg_replace=["quiet"])
    c2 = ostree_commit(repo, make_tree(work / "v2", version="2"), "os/x", 1700000002)
    ostree_admin("deploy", f"--sysroot={s.path}", "--os=testos", "os/x")
    assert [r[1] for r in strata_rows(s.path)] == [c2, c1]
    assert s.load().default.kargs.values("quiet") == ["quiet"]  # type: ignore[union-attr]
    c3 = ostree_commit(repo, make_tree(work / "v3", version="3"), "os/x", 1700000003)
    deploy(s, refspec="os/x")
    assert ostree_status(s.path) == strata_rows(s.path)
    assert [r[1] for r in strata_rows(s.path)] == [c3, c2]
    ostree_admin("undeploy", f"--sysroot={s.path}", "1")
    assert [r[1] for r in strata_rows(s.path)] == [c3]


def test_strata_reads_ostree_sysroot(work: Path) -> None:
    sysroot = ostree_sysroot(work / "sysroot")
    repo = sysroot / "ostree/repo"
    c1 = ostree_commit(repo, make_tree(work / "v1"), "os/x", 1700000001)
    ostree_admin("deploy", f"--sysroot={sysroot}", "--os=testos", "os/x")
    c2 = ostree_commit(repo, make_tree(work / "v2", version="2"), "os/x", 1700000002)
    ostree_admin("deploy", f"--sysroot={sysroot}", "--os=testos", "--karg=foo=bar", "os/x")
    ostree_admin("pin", f"--sysroot={sysroot}", "1")
    rows = status(Sysroot(sysroot))
    assert [(r.deployment.checksum, r.deployment.pinned) for r in rows] == [(c2, False), (c1, True)]
    assert rows[0].deployment.origin.refspec == "os/x"
    assert rows[0].deployment.kargs.get("foo") == "bar"
    assert rows[0].timestamp == 1700000002 and rows[0].default
    assert strata_rows(sysroot) == ostree_status(sysroot)
    c3 = ostree_commit(repo, make_tree(work / "v3", version="3"), "os/x", 1700000003)
    s = Sysroot(sysroot)
    deploy(s, refspec="os/x")
    deploy(s, refspec="os/x")  # drops ostree's (immutable) deployment of c2
    assert [r[1:3] for r in strata_rows(sysroot)] == [(c3, 1), (c3, 0), (c1, 0)]
    assert not list((sysroot / "ostree/deploy/testos/deploy").glob(f"{c2}*"))
    assert s.load().default.kargs.get("foo") == "bar"  # type: ignore[union-attr]


def tree_listing(root: Path) -> set[str]:
    skip = ("ostree/repo/objects", "ostree/deploy/testos/var")
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        refs_dir = str(Path(dirpath).relative_to(root)).startswith("ostree/repo/refs")
        for name in filenames + ([] if refs_dir else dirnames):
            rel = str(Path(dirpath, name).relative_to(root))
            if not rel.startswith(skip) and rel not in ("ostree/lock", "ostree/repo/.lock"):
                out.add(rel)
    return out


def test_layout_equals_ostree_for_same_commits(work: Path) -> None:
    """Same commits deployed by each tool give the same paths, entries, links and origins."""
    theirs = ostree_sysroot(work / "theirs")
    ours, _ = new_strata_sysroot(work / "o")
    for v in (1, 2):
        tree = make_tree(work / f"v{v}", version=str(v), kernel=f"k{v}".encode())
        for root in (theirs, ours.path):
            ostree_commit(root / "ostree/repo", tree, "os/x", 1700000000 + v)
        ostree_admin("deploy", f"--sysroot={theirs}", "--os=testos", "os/x")
        deploy(ours, refspec="os/x")
    assert tree_listing(ours.path) == tree_listing(theirs)
    for rel in tree_listing(theirs):
        a, b = theirs / rel, ours.path / rel
        if a.is_symlink():
            assert os.readlink(a) == os.readlink(b), rel
        elif rel.startswith(("boot/", "ostree/deploy/testos/deploy/")) and a.is_file():
            assert a.read_bytes() == b.read_bytes(), rel


def test_bls_entries_point_at_existing_files_and_deployments(work: Path) -> None:
    s, repo = new_strata_sysroot(work)
    for v in (1, 2):
        ostree_commit(repo, make_tree(work / f"v{v}", version=str(v), kernel=f"k{v}".encode()),
                      "os/x", 1700000000 + v)
        deploy(s, refspec="os/x")
    state = s.load()
    entries = sorted((s.boot / "loader/entries").glob("*.conf"))
    assert [p.name for p in entries] == ["ostree-1-testos.conf", "ostree-2-testos.conf"]
    for p in entries:
        e = BlsEntry.parse(p.read_text())
        idx = 2 - int(e.get("version") or 0)
        d = state.deployments[idx]
        assert e.get("title") == f"Test OS {2 - idx} (ostree:{idx})"
        for key in ("linux", "initrd"):
            assert (s.boot / (e.get(key) or "").lstrip("/")).is_file()
        link = [a for a in (e.get("options") or "").split() if a.startswith("ostree=")][0]
        target = os.path.realpath(s.path / link.removeprefix("ostree=/"))
        assert target == os.path.realpath(s.deployment_dir(d))
        assert Path(target).name == f"{d.checksum}.{d.deployserial}"


def test_ostree_admin_cleanup_keeps_strata_deployments(work: Path) -> None:
    """strata's ostree/BV/SBV/N refs keep deployed commits through ostree's own prune."""
    s, repo = new_strata_sysroot(work)
    cs = [ostree_commit(repo, make_tree(work / f"v{v}", version=str(v)), f"os/v{v}",
                        1700000000 + v) for v in (1, 2)]
    for v in (1, 2):
        deploy(s, refspec=f"os/v{v}")
    for v in (1, 2):
        os.unlink(repo / f"refs/heads/os/v{v}")
    ostree_admin("cleanup", f"--sysroot={s.path}")
    for c in cs:
        assert (repo / f"objects/{c[:2]}/{c[2:]}.commit").is_file()
    assert [r[1] for r in strata_rows(s.path)] == [cs[1], cs[0]]
    run(["ostree", f"--repo={repo}", "fsck", "-q"])


def test_two_stateroots_are_kept_apart(work: Path) -> None:
    s, repo = new_strata_sysroot(work)
    os_init(s, "other")
    ca = ostree_commit(repo, make_tree(work / "a"), "os/a", 1700000001)
    cb = ostree_commit(repo, make_tree(work / "b", version="9", kernel=b"kb"), "os/b", 1700000002)
    deploy(s, refspec="os/a", stateroot="testos")
    deploy(s, refspec="os/b", stateroot="other")
    ca2 = ostree_commit(repo, make_tree(work / "a2", version="2"), "os/a", 1700000003)
    deploy(s, refspec="os/a", stateroot="testos")
    rows = strata_rows(s.path)
    assert [(r[0], r[1]) for r in rows] == [("testos", ca2), ("other", cb), ("testos", ca)]
    assert ostree_status(s.path) == rows
    ostree_admin("deploy", f"--sysroot={s.path}", "--os=other", "os/b")
    shape = ["other", "testos", "other", "testos"]
    assert [r[0] for r in strata_rows(s.path)] == shape
    twin = work / "twin"
    run(["cp", "-a", s.path, twin])
    ostree_admin("deploy", f"--sysroot={twin}", "--os=other", "os/b")
    deploy(s, refspec="os/b", stateroot="other")  # the same retention as ostree's deploy
    rows = strata_rows(s.path)
    assert rows == ostree_status(twin) == ostree_status(s.path)
    assert [(r[0], r[2]) for r in rows] == [("other", 2), ("other", 1), ("testos", 0),
                                            ("testos", 0)]
    for root in (twin, s.path):
        subprocess.run(["chattr", "-R", "-i", str(root / "ostree/deploy")], check=True)
    entries = {p.name: p.read_text() for p in (s.boot / "loader/entries").iterdir()}
    assert entries == {p.name: p.read_text() for p in (twin / "boot/loader/entries").iterdir()}
    assert (s.stateroot_dir("other") / "var/lib/app/state").is_file()
