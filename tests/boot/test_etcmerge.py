"""The /etc merge on plain directories, checked against real `ostree admin deploy`."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from boot.errors import EtcMergeError
from boot.etcmerge import copy_tree, diff_dirs, merge_etc, preview_merge
from tests.boot.conftest import (
    make_tree,
    ostree_admin,
    ostree_commit,
    ostree_sysroot,
    write_files,
)

V1_ETC: dict[str, bytes | str | None] = {
    "a.conf": "a1\n", "b.conf": "b1\n", "b2.conf": "b2-1\n", "c.conf": "c1\n",
    "d.conf": "d1\n", "e.conf": "e1\n", "f.conf": "f1\n", "g.conf": "g1\n",
    "sub/k.conf": "k1\n",
}
V2_ETC: dict[str, bytes | str | None] = {
    **{k: v for k, v in V1_ETC.items() if k != "f.conf"},
    "b2.conf": "b2-2\n", "c.conf": "c2\n", "d.conf": "d2-image\n", "f.conf/inner": "f dir\n",
    "image-new.conf": "new in v2\n",
}


def user_edits(etc: Path) -> None:
    """user-modified a, deleted b and b2, added new + newdir + link, both-changed d,
    file e replaced by a directory, mode change on g."""
    (etc / "a.conf").write_text("a-user\n")
    (etc / "b.conf").unlink()
    (etc / "b2.conf").unlink()
    (etc / "d.conf").write_text("d-user\n")
    (etc / "e.conf").unlink()
    write_files(etc, {"new.conf": "user added\n", "newdir/x.conf": "x\n",
                      "e.conf/inside": "user dir\n", "link": "->a.conf"})
    os.chmod(etc / "g.conf", 0o600)


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, os.readlink(p).encode())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), b"")
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


def local_merge(tmp: Path) -> tuple[Path, Path, Path, Path]:
    v1, v2 = make_tree(tmp / "v1", etc=V1_ETC), make_tree(tmp / "v2", etc=V2_ETC)
    old_etc = tmp / "old-etc"
    copy_tree(v1 / "usr/etc", old_etc)
    user_edits(old_etc)
    new_etc = tmp / "new-etc"
    copy_tree(v2 / "usr/etc", new_etc)
    return v1 / "usr/etc", old_etc, v2 / "usr/etc", new_etc


def test_merge_cases(tmp_path: Path) -> None:
    old_usr, old_etc, new_usr, new_etc = local_merge(tmp_path)
    changes = merge_etc(old_usr, old_etc, new_etc)
    assert set(changes.removed) == {"b.conf", "b2.conf"}
    assert set(changes.added) == {"new.conf", "newdir", "link"}
    assert set(changes.modified) == {"a.conf", "d.conf", "e.conf", "g.conf"}
    r = snapshot(new_etc)
    assert r["a.conf"][2] == b"a-user\n"                      # user-modified
    assert "b.conf" not in r and "b2.conf" not in r            # user-deleted (b2: image changed)
    assert r["new.conf"][2] == b"user added\n" and r["newdir/x.conf"][2] == b"x\n"  # user-added
    assert r["c.conf"][2] == b"c2\n"                          # image-changed
    assert r["d.conf"][2] == b"d-user\n"                      # both changed: user wins
    assert r["e.conf"][0] == "d" and r["e.conf/inside"][2] == b"user dir\n"  # file -> dir (user)
    assert r["f.conf"][0] == "d" and r["f.conf/inner"][2] == b"f dir\n"     # file -> dir (image)
    assert r["g.conf"][1] == 0o600
    assert r["link"] == ("l", 0, b"a.conf")
    assert r["image-new.conf"][2] == b"new in v2\n"


def test_preview_reports_conflicts_without_writing(tmp_path: Path) -> None:
    old_usr, old_etc, new_usr, _ = local_merge(tmp_path)
    before = snapshot(old_etc), snapshot(new_usr)
    plan = preview_merge(old_usr, old_etc, new_usr)
    assert set(plan.conflicts) == {"b2.conf", "d.conf"}
    assert plan.blocked == ()
    assert set(plan.carried.modified) == {"a.conf", "d.conf", "e.conf", "g.conf"}
    assert (snapshot(old_etc), snapshot(new_usr)) == before


def test_user_file_where_image_now_has_directory_is_refused(tmp_path: Path) -> None:
    old_usr = tmp_path / "ou"
    write_files(old_usr, {"h.conf": "h1\n"})
    old_etc = tmp_path / "oe"
    write_files(old_etc, {"h.conf": "h-user\n"})
    new_usr = tmp_path / "nu"
    write_files(new_usr, {"h.conf/x": "dir now\n"})
    assert preview_merge(old_usr, old_etc, new_usr).blocked == ("h.conf",)
    new_etc = tmp_path / "ne"
    copy_tree(new_usr, new_etc)
    with pytest.raises(EtcMergeError, match="h.conf"):
        merge_etc(old_usr, old_etc, new_etc)


def test_diff_ignores_identical_and_reports_dir_metadata(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_files(a, {"d/x": "1\n", "y": "2\n"})
    shutil.copytree(a, b, symlinks=True)
    assert diff_dirs(a, b) == diff_dirs(b, a)
    assert not (diff_dirs(a, b).modified or diff_dirs(a, b).added or diff_dirs(a, b).removed)
    os.chmod(b / "d", 0o700)
    assert diff_dirs(a, b).modified == ("d",)


@pytest.mark.integration
def test_same_result_as_ostree_admin_deploy(work: Path) -> None:
    """Oracle: the /etc real ostree builds equals strata's merge of the same trees."""
    sysroot = ostree_sysroot(work / "sysroot")
    repo = sysroot / "ostree/repo"
    v1 = make_tree(work / "v1", etc=V1_ETC)
    v2 = make_tree(work / "v2", version="2", etc=V2_ETC)
    ostree_commit(repo, v1, "os/x", 1700000000)
    ostree_admin("deploy", f"--sysroot={sysroot}", "--os=testos", "os/x")
    (dep1,) = [p for p in (sysroot / "ostree/deploy/testos/deploy").iterdir() if p.is_dir()]
    user_edits(dep1 / "etc")
    ostree_commit(repo, v2, "os/x", 1700000100)
    ostree_admin("deploy", f"--sysroot={sysroot}", "--os=testos", "os/x")
    (dep2,) = [p for p in (sysroot / "ostree/deploy/testos/deploy").iterdir()
               if p.is_dir() and p != dep1]
    new_etc = work / "strata-etc"
    copy_tree(v2 / "usr/etc", new_etc)
    merge_etc(dep1 / "usr/etc", dep1 / "etc", new_etc)
    assert snapshot(new_etc) == snapshot(dep2 / "etc")
