"""A layering deploy brings the /var files its commit changed into the stateroot's /var
(:mod:`boot.varcarry`): untouched host copies take the new content, host changes are kept,
and nothing is followed through a symlink of the image or of the host's /var."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from boot.deploy import deploy
from boot.sysroot import Sysroot
from boot.varcarry import MAX_CHANGED, changed_files
from store.repo import Repo
from tests.boot.conftest import make_tree, ostree_commit
from tests.boot.test_deploy import commit, new_sysroot, tree_hash

pytestmark = pytest.mark.integration

V1 = {"var/cache/debconf/config.dat": "Name: q1\n", "var/lib/pam/seen": "unix\n",
      "var/lib/pam/auth": "unix\n", "var/log/keep.log": "image log\n"}


def var_of(s: Sysroot) -> Path:
    return s.path / "ostree/deploy/testos/var"


def test_untouched_files_take_the_new_copy_host_changes_are_kept(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1, files=V1)
    first = deploy(s, refspec="os/x").deployment
    var = var_of(s)
    (var / "lib/pam/auth").write_text("unix\nedited by the admin\n")
    (var / "log/keep.log").unlink()  # absent on the host: the new copy comes back
    before = tree_hash(s.deployment_dir(first))
    tree = make_tree(work / "v2", version="2", files={
        **V1, "var/cache/debconf/config.dat": "Name: q1\n\nName: q2\n",
        "var/lib/pam/seen": "unix\nsystemd\n", "var/lib/pam/auth": "unix\nsystemd\n",
        "var/log/keep.log": "image log 2\n", "var/lib/ucf/hashfile": "abc  /etc/x\n"})
    os.chmod(tree / "var/cache/debconf/config.dat", 0o600)
    os.chown(tree / "var/lib/ucf", 0, 4)
    os.chmod(tree / "var/lib/ucf", 0o750)
    os.chown(tree / "var/lib/ucf/hashfile", 0, 4)
    ostree_commit(s.repo_path, tree, "os/x", 1700000002)
    res = deploy(s, refspec="os/x", merge_var=True)
    assert (var / "cache/debconf/config.dat").read_text() == "Name: q1\n\nName: q2\n"
    assert stat.S_IMODE((var / "cache/debconf/config.dat").stat().st_mode) == 0o600
    assert (var / "lib/pam/seen").read_text() == "unix\nsystemd\n"
    assert (var / "lib/pam/auth").read_text() == "unix\nedited by the admin\n"
    assert (var / "log/keep.log").read_text() == "image log 2\n"
    st = (var / "lib/ucf").stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (4, 0o750)
    assert (var / "lib/ucf/hashfile").stat().st_gid == 4
    assert set(res.var.carried) == {"/var/cache/debconf/config.dat", "/var/lib/pam/seen",
                                    "/var/log/keep.log", "/var/lib/ucf/hashfile"}
    assert res.var.kept == ("/var/lib/pam/auth",)
    assert res.var.warnings() == ["/var/lib/pam/auth changed on this host and in the new "
                                  "image; the host's copy is kept"]
    assert tree_hash(s.deployment_dir(first)) == before  # the previous deployment: untouched
    assert not [p for p in var.rglob(".*") if p.is_file()]  # no temporary file left


def test_plain_deploy_keeps_var_as_ostree_does(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1, files=V1)
    deploy(s, refspec="os/x")
    commit(s, work, 2, files={**V1, "var/lib/pam/seen": "unix\nsystemd\n"})
    assert deploy(s, refspec="os/x").var.carried == ()
    assert (var_of(s) / "lib/pam/seen").read_text() == "unix\n"


def test_hostile_image_and_host_symlinks_are_not_followed(work: Path) -> None:
    """The first image makes /var/lib/evil a symlink to a host directory and /var/lib/x a
    symlink to a host file; the next one ships real files there: the host keeps its
    symlinks (reported) and the canary outside the sysroot is unchanged."""
    canary = work / "host"
    canary.mkdir()
    (canary / "canary").write_text("untouched\n")
    s = new_sysroot(work)
    commit(s, work, 1, files={**V1, "var/lib/evil": f"->{canary}",
                              "var/lib/x": f"->{canary}/canary",
                              "var/lib/y": "image y\n"})
    deploy(s, refspec="os/x")
    (var_of(s) / "lib/y").unlink()
    (var_of(s) / "lib/y").symlink_to(canary / "canary")  # the host's own symlink
    commit(s, work, 2, files={**V1, "var/lib/evil/canary": "pwned\n",
                              "var/lib/evil/new/f": "pwned\n",
                              "var/lib/x": "pwned\n", "var/lib/y": "pwned\n",
                              "var/lib/z": f"->{canary}/canary"})
    res = deploy(s, refspec="os/x", merge_var=True)
    assert sorted(res.var.kept) == ["/var/lib/evil/canary", "/var/lib/evil/new/f",
                                    "/var/lib/x", "/var/lib/y"]
    assert res.var.carried == ()
    assert [p.name for p in canary.iterdir()] == ["canary"]
    assert (canary / "canary").read_text() == "untouched\n"
    assert (var_of(s) / "lib/x").is_symlink() and (var_of(s) / "lib/y").is_symlink()
    assert not os.path.lexists(var_of(s) / "lib/z")  # symlinks are the tmpfiles lines' job


def test_diff_follows_the_change_and_is_bounded(work: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    s = new_sysroot(work)
    many = {f"var/lib/many/f{i}": f"{i}\n" for i in range(20)}
    a = commit(s, work, 1, files={**V1, **many})
    b = commit(s, work, 2, files={**V1, **many, "var/lib/pam/seen": "changed\n"})
    repo = Repo.open(s.repo_path)
    changes, truncated = changed_files(repo, a, b)
    assert [c.rel for c in changes] == ["var/lib/pam/seen"] and not truncated
    c = commit(s, work, 3, files={**V1, **{k: "new\n" for k in many}})
    monkeypatch.setattr("boot.varcarry.MAX_CHANGED", 5)
    changes, truncated = changed_files(repo, a, c)
    assert len(changes) == 5 and truncated
    assert MAX_CHANGED >= 1000
