"""What one deployment stores beside its repository's objects, against ``ostree admin deploy``.

ostree hardlinks a deployment's /usr and its kernel in /boot to the repository's
objects and copies only /etc (and never links an empty file).  strata must store
nothing more, except the image's /var copied into the empty stateroot /var
(docs/var-state.md, as ostree 2024.3; the 2022.7 here leaves it empty), and leave
no kept checkout or temporary tree in the repository.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from boot.deploy import deploy, os_init
from boot.sysroot import Sysroot
from tests.boot.conftest import make_tree, ostree_admin, ostree_commit, ostree_sysroot

pytestmark = pytest.mark.integration

_DEPLOY_DIR = re.compile(r"(ostree/deploy/testos/deploy/)[0-9a-f]{64}\.0")


def stored_copies(sysroot: Path) -> dict[str, int]:
    """Non-empty regular files sharing no inode with an object of the sysroot's repository,
    as {path (deployment dir named CSUM.0): size}; the repository's own files left out."""
    repo = sysroot / "ostree/repo"
    objects = {os.lstat(os.path.join(d, n)).st_ino
               for d, _, names in os.walk(repo / "objects") for n in names}
    out: dict[str, int] = {}
    for d, _, names in os.walk(sysroot):
        for n in names:
            p = Path(d, n)
            st = os.lstat(p)
            if (stat.S_ISREG(st.st_mode) and st.st_size and st.st_ino not in objects
                    and not p.is_relative_to(repo)):
                out[_DEPLOY_DIR.sub(r"\1CSUM.0", str(p.relative_to(sysroot)))] = st.st_size
    return out


def test_one_deployment_stores_no_more_than_ostree_admin_deploy(work: Path) -> None:
    big = os.urandom(1 << 20)
    tree = make_tree(work / "tree", kernel=big, initramfs=big[::-1],
                     files={"usr/share/data/blob": big[:4096], "var/lib/app/db": "rows\n"})
    theirs = ostree_sysroot(work / "ostree")
    ostree_commit(theirs / "ostree/repo", tree, "os/x")
    ostree_admin("deploy", f"--sysroot={theirs}", "--os=testos", "os/x")
    s = Sysroot(work / "strata")
    os_init(s, "testos")
    ostree_commit(s.repo_path, tree, "os/x")
    deploy(s, refspec="os/x")

    ours = stored_copies(s.path)
    var = {p: n for p, n in ours.items() if p.startswith("ostree/deploy/testos/var/")}
    assert var == {"ostree/deploy/testos/var/lib/app/state": len("image var\n"),
                   "ostree/deploy/testos/var/lib/app/db": len("rows\n")}
    rest = {p: n for p, n in ours.items() if p not in var}
    assert rest.keys() - stored_copies(theirs).keys() == set(), rest
    assert sum(rest.values()) < 4096  # /etc and the boot entry: the 2 MB kernel is linked
    assert tmp_tree(s.path) == tmp_tree(theirs)  # no kept checkout, no temporary tree


def tmp_tree(sysroot: Path) -> set[str]:
    """Everything below the repository's tmp/ but lock files (ostree has tmp/cache)."""
    tmp = sysroot / "ostree/repo/tmp"
    return {str(Path(d, n).relative_to(tmp)) for d, dirs, files in os.walk(tmp)
            for n in dirs + files if not n.endswith(".lock")}
