"""dpkg's triggers and preinst order on a real Debian 12 minbase, with test-built packages.

Triggers: the added packages' interests are recorded in dpkg's own format
(``triggers/File``, ``triggers/NAME``); a kept package's file trigger hit by an
added package's files, an ``activate`` line and a postinst's ``dpkg-trigger``
run the interested package's ``postinst triggered`` once, through the image's
own dpkg, which leaves nothing pending (``dpkg --audit`` clean).  Preinst:
``preinst install`` runs before its package's files are placed, and the
diversions it (or an earlier compose) registered apply to the files of other
packages, not to its own, as dpkg unpacks them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import apt_repo, build_deb, ostree_layout
from layering.compose import ComposeRequest, compose
from store.commit import commit_directory
from store.mtree import MutableTree
from store.repo import Repo, RepoMode
from tests.layering.realworld import build_minbase, dpkg_audit
from tests.store.servers import http_server
from tests.util import require_tool

pytestmark = pytest.mark.slow

DB = "usr/lib/sysimage/dpkg"
WATCHER_POSTINST = """#!/bin/sh
set -e
mkdir -p /var/lib/watcher
case "$1" in
  configure) echo configured >> /var/lib/watcher/log ;;
  triggered) echo "triggered $2" >> /var/lib/watcher/log ;;
esac
"""
DIVERTER_PREINST = """#!/bin/sh
set -e
if [ -e /usr/bin/diverter-own ]; then echo present; else echo absent; fi > /var/lib/diverter-saw
dpkg-divert --package diverter --rename --divert /usr/bin/victim.real /usr/bin/victim
dpkg-divert --package diverter --rename --divert /usr/bin/later.real /usr/bin/later
dpkg-divert --package diverter --rename --divert /usr/lib/diverter/own /usr/bin/diverter-own
"""


def _debs(d: Path) -> list[Path]:
    d.mkdir(parents=True)
    return [
        build_deb(d, "watcher", files={"usr/share/doc/watcher/README": b"w\n"},
                  scripts={"postinst": WATCHER_POSTINST,
                           "triggers": "interest /usr/share/watched\n"
                                       "interest-noawait watch-me\n"}),
        build_deb(d, "toucher", files={"usr/share/watched/sub/file": b"t\n"}),
        build_deb(d, "activator", files={"usr/share/doc/activator/README": b"a\n"},
                  scripts={"triggers": "activate watch-me\n"}),
        build_deb(d, "caller", files={"usr/share/doc/caller/README": b"c\n"},
                  scripts={"postinst": "#!/bin/sh\nset -e\ndpkg-trigger watch-me\n"}),
        build_deb(d, "victim", files={"usr/bin/victim": b"#!/bin/sh\necho victim\n"}),
        build_deb(d, "later", files={"usr/bin/later": b"#!/bin/sh\necho later\n"}),
        build_deb(d, "diverter", files={"usr/bin/victim": b"#!/bin/sh\necho guard\n",
                                        "usr/bin/diverter-own": b"#!/bin/sh\necho own\n"},
                  scripts={"preinst": DIVERTER_PREINST}),
    ]


@dataclass
class World:
    repo: Repo
    base: str
    source: str
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("mmdebstrap", "apt-ftparchive", "bwrap", "dpkg-deb")
    tmp = tmp_path_factory.mktemp("triggers")
    rootfs = ostree_layout(build_minbase(tmp / "rootfs"))
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    base = commit_directory(repo, rootfs, branch="minbase").checksum
    subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=True)
    apt_repo(tmp / "apt", _debs(tmp / "debs"))
    with http_server(tmp / "apt") as served:
        yield World(repo, base, f"deb [trusted=yes] {served.url} stable main", tmp)


def _compose(w: World, base: str, branch: str, *names: str) -> str:
    r = compose(w.repo, ComposeRequest(base=base, branch=branch, install=names,
                                       sources=(w.source,)))
    assert r.checksum is not None
    return r.checksum


def _text(w: World, commit: str, path: str) -> str | None:
    node = MutableTree.from_commit(w.repo, commit).lookup(path)
    return w.repo.load_file(node)[1].decode() if isinstance(node, str) else None


def test_interests_are_recorded_in_dpkgs_format(world: World) -> None:
    c = _compose(world, world.base, "t/watcher", "watcher")
    assert "/usr/share/watched watcher\n" in (_text(world, c, f"{DB}/triggers/File") or "")
    assert _text(world, c, f"{DB}/triggers/watch-me") == "watcher/noawait\n"
    assert _text(world, c, "var/lib/watcher/log") == "configured\n"


def test_file_explicit_and_script_activations_run_postinst_triggered(world: World) -> None:
    watched = _compose(world, world.base, "t/watched", "watcher")
    c = _compose(world, watched, "t/activated", "toucher", "activator", "caller")
    log = (_text(world, c, "var/lib/watcher/log") or "").splitlines()
    assert log[0] == "configured" and len(log) == 2, log
    assert sorted(log[1].split()[1:]) == ["/usr/share/watched", "watch-me"]
    assert not _text(world, c, f"{DB}/triggers/Unincorp")
    status = _text(world, c, f"{DB}/status") or ""
    assert "Triggers-Pending" not in status and "Triggers-Awaited" not in status
    assert "triggers-" not in status
    assert dpkg_audit(world.repo.path, c, world.tmp / "audit-activated") == ""


def test_preinst_runs_before_unpack_and_diversions_apply_to_others(world: World) -> None:
    victims = _compose(world, world.base, "t/victims", "victim")
    c = _compose(world, victims, "t/diverted", "diverter")
    assert _text(world, c, "var/lib/diverter-saw") == "absent\n"
    assert _text(world, c, "usr/bin/victim.real") == "#!/bin/sh\necho victim\n"
    assert _text(world, c, "usr/bin/victim") == "#!/bin/sh\necho guard\n"
    assert _text(world, c, "usr/bin/diverter-own") == "#!/bin/sh\necho own\n"
    assert _text(world, c, "usr/lib/diverter/own") is None
    # a later compose places another package's file at its diversion's target
    after = _compose(world, c, "t/after", "later")
    assert _text(world, after, "usr/bin/later.real") == "#!/bin/sh\necho later\n"
    assert _text(world, after, "usr/bin/later") is None
    assert dpkg_audit(world.repo.path, after, world.tmp / "audit-after") == ""
