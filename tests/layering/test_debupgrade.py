"""A base Debian package replaced by another version runs dpkg's upgrade sequence, with the
real dpkg and apt-get as the oracle.

The base is a real Debian 12 minbase where ``dpkg -i`` installed ``thing 1.0``
(its conffile ``/etc/thing.conf``, a conffile and a file only 1.0 ships); every
script of ``thing`` appends its version, name, arguments and which of the
package's files it sees to ``/var/lib/thing/log``.  strata's compose of that
base must leave the same log lines in the same order, the same files and the
same dpkg database entry (``Conffiles`` with the obsolete one) as ``dpkg -i``
(``override replace``) and ``apt-get install`` (a package that needs 2.0) in a
chroot of a copy of the same base.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from debian.deb822 import Deb822

from fixtures.images import apt_repo, build_deb, ostree_layout
from layering.compose import ComposeRequest, compose
from layering.errors import ScriptError
from store.commit import commit_directory
from store.mtree import MutableTree
from store.repo import Repo, RepoMode
from tests.layering.corpus_sides import bwrap_view
from tests.layering.realworld import build_minbase, dpkg_audit
from tests.store.servers import http_server
from tests.util import require_tool, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DB = "usr/lib/sysimage/dpkg"
SCRIPT = """#!/bin/sh
set -e
if [ "$DPKG_MAINTSCRIPT_NAME $1 $2" = "prerm upgrade 6.6" ]; then exit 1; fi
mkdir -p /var/lib/thing
has() { if [ -e "$1" ]; then echo y; else echo n; fi; }
echo "thing-@V@ $DPKG_MAINTSCRIPT_NAME $* common=$(cat /usr/share/thing/common 2>/dev/null \
|| echo -) old=$(has /usr/share/thing/old-only) new=$(has /usr/share/thing/new-only)\
 gone=$(has /etc/thing-gone.conf) conf=$(cat /etc/thing.conf)" >> /var/lib/thing/log
"""
WATCHER_POSTINST = """#!/bin/sh
set -e
mkdir -p /var/lib/thing
echo "watcher postinst $*" >> /var/lib/thing/log
"""
NEEDS_POSTINST = """#!/bin/sh
set -e
echo "needs-thing postinst $* common=$(cat /usr/share/thing/common)" >> /var/lib/thing/log
"""
FILES = ("usr/share/thing/common", "usr/share/thing/old-only", "usr/share/thing/new-only",
         "etc/thing.conf", "etc/thing-gone.conf")


def _thing(d: Path, version: str, files: dict[str, bytes], conffiles: list[str]) -> Path:
    body = SCRIPT.replace("@V@", version)
    return build_deb(d, "thing", version, files=files, conffiles=conffiles,
                     scripts={s: body for s in ("preinst", "postinst", "prerm", "postrm")})


def _debs(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True)
    return {
        "thing1": _thing(d, "1.0", {"usr/share/thing/common": b"1\n",
                                    "usr/share/thing/old-only": b"old\n",
                                    "etc/thing.conf": b"conf 1\n",
                                    "etc/thing-gone.conf": b"gone\n"},
                         ["etc/thing.conf", "etc/thing-gone.conf"]),
        "thing2": _thing(d, "2.0", {"usr/share/thing/common": b"2\n",
                                    "usr/share/thing/new-only": b"new\n",
                                    "etc/thing.conf": b"conf 2\n"}, ["etc/thing.conf"]),
        "watcher": build_deb(d, "watcher", files={"usr/share/doc/watcher/README": b"w\n"},
                             scripts={"postinst": WATCHER_POSTINST,
                                      "triggers": "interest /usr/share/thing/old-only\n"}),
        "needs": build_deb(d, "needs-thing", control="Depends: thing (>= 2.0)\n",
                           files={"usr/share/doc/needs-thing/README": b"n\n"},
                           scripts={"postinst": NEEDS_POSTINST}),
    }


@dataclass
class World:
    repo: Repo
    base: str
    source: str
    debs: dict[str, Path]
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("mmdebstrap", "apt-ftparchive", "bwrap", "dpkg-deb", "ostree")
    tmp = tmp_path_factory.mktemp("debupgrade")
    debs = _debs(tmp / "debs")
    rootfs = build_minbase(tmp / "rootfs")
    for deb in ("watcher", "thing1"):  # a trigger on the path only thing 1.0 ships
        shutil.copy(debs[deb], rootfs / f"root/{deb}.deb")
        proc = bwrap_view(rootfs, rootfs / "var", ["dpkg", "-i", f"/root/{deb}.deb"],
                          writable=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (rootfs / f"root/{deb}.deb").unlink()
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    base = commit_directory(repo, ostree_layout(rootfs), branch="base").checksum
    subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=True)
    apt_repo(tmp / "apt", [debs["thing2"], debs["needs"]])
    with http_server(tmp / "apt") as served:
        yield World(repo, base, f"deb [trusted=yes] {served.url} stable main", debs, tmp)


def _chroot(w: World, name: str) -> Path:
    """A writable copy (not hardlinks: scripts append to files) of the base, with an /etc
    made from usr/etc as deploy does, and only the test repository as apt source."""
    root = w.tmp / name
    run(["ostree", "checkout", "--repo", w.repo.path, "--force-copy", w.base, root])
    run(["cp", "-a", root / "usr/etc", root / "etc"])
    for f in (root / "etc/apt/sources.list.d").iterdir():
        f.unlink()
    (root / "etc/apt/sources.list").write_text(w.source + "\n")
    return root


def _in_chroot(root: Path, *argv: str) -> None:
    proc = bwrap_view(root, root / "var", list(argv), writable=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@dataclass(frozen=True)
class Facts:
    """What is compared: the scripts' log, thing's files and its dpkg database entry."""

    log: list[str]
    files: dict[str, str | None]
    status: dict[str, str]
    listed: list[str]
    conffiles: str


def _status(text: str, name: str) -> dict[str, str]:
    for para in Deb822.iter_paragraphs(text):
        if para.get("Package") == name:
            return {k: " ".join(v.split()) for k, v in para.items()}
    return {}


def _chroot_facts(root: Path) -> Facts:
    def read(rel: str) -> str | None:
        p = root / rel
        return p.read_text() if p.is_file() else None

    return Facts(log=(read("var/lib/thing/log") or "").splitlines(),
                 files={f: read(f) for f in FILES},
                 status=_status(read("var/lib/dpkg/status") or "", "thing"),
                 listed=sorted((read("var/lib/dpkg/info/thing.list") or "").splitlines()),
                 conffiles=read("var/lib/dpkg/info/thing.conffiles") or "")


def _strata_facts(w: World, commit: str) -> Facts:
    tree = MutableTree.from_commit(w.repo, commit)

    def read(rel: str) -> str | None:
        node = tree.lookup(rel)
        return w.repo.load_file(node)[1].decode() if isinstance(node, str) else None

    return Facts(log=(read("var/lib/thing/log") or "").splitlines(),
                 files={f: read(f"usr/{f}" if f.startswith("etc/") else f) for f in FILES},
                 status=_status(read(f"{DB}/status") or "", "thing"),
                 listed=sorted((read(f"{DB}/info/thing.list") or "").splitlines()),
                 conffiles=read(f"{DB}/info/thing.conffiles") or "")


def _same(strata: Facts, dpkg: Facts, *, trigproc_anywhere: bool = False) -> None:
    """The same facts.  dpkg runs a fresh package's ``postinst configure ""``: the empty
    argument is not part of this comparison (strata's fresh-install path passes none).
    ``trigproc_anywhere``: the watcher's ``triggered`` run may come elsewhere in the
    order (apt's ``dpkg --configure --pending`` processes a trigger made pending while
    unpacking in its queue order, between two configures; strata, fresh installs too,
    after all of them), but must come as often."""
    def lines(f: Facts) -> list[str]:
        out = [" ".join(x.split()) for x in f.log]
        if trigproc_anywhere:
            out = [x for x in out if "triggered" not in x] + sorted(
                x for x in out if "triggered" in x)
        return out
    assert lines(strata) == lines(dpkg)
    assert strata.files == dpkg.files
    assert strata.status == dpkg.status
    assert strata.listed == dpkg.listed
    assert strata.conffiles == dpkg.conffiles


def test_override_replace_upgrades_like_dpkg_i(world: World) -> None:
    root = _chroot(world, "dpkg-i")
    shutil.copy(world.debs["thing2"], root / "root/thing2.deb")
    _in_chroot(root, "dpkg", "-i", "/root/thing2.deb")
    dpkg = _chroot_facts(root)
    assert dpkg.log[-5:] == [  # what dpkg 1.21 does, as read in unpack.c and configure.c
        "thing-1.0 prerm upgrade 2.0 common=1 old=y new=n gone=y conf=conf 1",
        "thing-2.0 preinst upgrade 1.0 2.0 common=1 old=y new=n gone=y conf=conf 1",
        "thing-1.0 postrm upgrade 2.0 common=2 old=y new=y gone=y conf=conf 1",
        "thing-2.0 postinst configure 1.0 common=2 old=n new=y gone=y conf=conf 2",
        "watcher postinst triggered /usr/share/thing/old-only"]
    r = compose(world.repo, ComposeRequest(base=world.base, branch="t/replace",
                                           replace_local=(world.debs["thing2"],)))
    assert r.checksum is not None
    _same(_strata_facts(world, r.checksum), dpkg)
    assert dpkg_audit(world.repo.path, r.checksum, world.tmp / "audit-replace") == ""


def test_override_replace_without_scripts_leaves_dpkgs_files(world: World) -> None:
    root = _chroot(world, "dpkg-i-noscripts")
    shutil.copy(world.debs["thing2"], root / "root/thing2.deb")
    _in_chroot(root, "dpkg", "-i", "/root/thing2.deb")
    dpkg = _chroot_facts(root)
    r = compose(world.repo, ComposeRequest(base=world.base, branch="t/noscripts",
                                           no_scripts=True,
                                           replace_local=(world.debs["thing2"],)))
    assert r.checksum is not None
    strata = _strata_facts(world, r.checksum)
    assert (strata.files, strata.status, strata.listed) == (dpkg.files, dpkg.status, dpkg.listed)


def test_a_failing_old_prerm_upgrade_aborts_the_compose(world: World) -> None:
    bad = _thing(world.tmp / "debs", "6.6", {"usr/share/thing/common": b"6\n"}, [])
    with pytest.raises(ScriptError, match="prerm script of package thing"):
        compose(world.repo, ComposeRequest(base=world.base, branch="t/bad",
                                           replace_local=(bad,)))
    assert world.repo.read_ref("t/bad") is None


def test_override_replace_downgrades_like_dpkg_i(world: World) -> None:
    up = compose(world.repo, ComposeRequest(base=world.base, branch="t/up",
                                            replace_local=(world.debs["thing2"],)))
    assert up.checksum is not None
    root = _chroot(world, "dpkg-down")
    for deb in ("thing2", "thing1"):
        shutil.copy(world.debs[deb], root / f"root/{deb}.deb")
        _in_chroot(root, "dpkg", "-i", f"/root/{deb}.deb")
    down = compose(world.repo, ComposeRequest(base=up.checksum, branch="t/down",
                                              replace_local=(world.debs["thing1"],)))
    assert down.checksum is not None
    dpkg = _chroot_facts(root)
    assert ("thing-1.0 postinst configure 2.0 common=1 old=y new=n gone=y conf=conf 1"
            in dpkg.log)
    _same(_strata_facts(world, down.checksum), dpkg)


def test_install_needing_a_newer_base_package_upgrades_like_apt_get(world: World) -> None:
    root = _chroot(world, "apt-get")
    _in_chroot(root, "apt-get", "update", "-q")
    _in_chroot(root, "apt-get", "install", "-y", "-q", "-o", "Dpkg::Use-Pty=0", "needs-thing")
    apt = _chroot_facts(root)
    assert ("thing-2.0 preinst upgrade 1.0 2.0 common=1 old=y new=n gone=y conf=conf 1"
            in apt.log)
    r = compose(world.repo, ComposeRequest(base=world.base, branch="t/needs",
                                           install=("needs-thing",), sources=(world.source,)))
    assert r.checksum is not None
    assert apt.log.count("watcher postinst triggered /usr/share/thing/old-only") == 2
    _same(_strata_facts(world, r.checksum), apt, trigproc_anywhere=True)
    commit = world.repo.load_commit(r.checksum)
    assert commit.meta_value("rpmostree.replaced-base-packages") == ["thing-1.0.all"]
    assert commit.meta_value("rpmostree.removed-base-packages") == []
