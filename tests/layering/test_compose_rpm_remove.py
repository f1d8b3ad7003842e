"""``compose --remove`` of base packages of an rpm image: their scripts run as ``rpm -e``
runs them (the order itself is checked against rpm by test_rpm_remove_oracle.py); a lua
scriptlet or a failing one aborts the compose, nothing is committed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import BUSYBOX
from fixtures.rpmimages import base_specs, build, spec
from layering.compose import ComposeRequest, ComposeResult, compose
from layering.errors import ScriptError
from store.checkout import checkout
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.layering.realworld import cache_root
from tests.layering.rpmoracle import rpm_root
from tests.store.servers import http_server
from tests.util import require_tool, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MARK = "/usr/lib/removal.log"


def _specs() -> list[object]:
    def pkg(name: str, scripts: str) -> object:
        return spec(name, scripts=scripts, install=f"mkdir -p %{{buildroot}}/usr/share/{name}\n"
                    f"echo x > %{{buildroot}}/usr/share/{name}/x\n", files=f"/usr/share/{name}\n")

    return [pkg("plain-gone", f"%preun\necho \"preun $* $(ls /usr/share/plain-gone)\" >> {MARK}\n"
                              f"%postun\necho \"postun $* $(ls /usr/share)\" >> {MARK}\n"),
            pkg("lua-gone", "%postun -p <lua>\nprint('gone')\n"),
            pkg("fail-gone", "%preun\necho refusing >&2\nexit 3\n")]


@dataclass
class World:
    repo: Repo
    base: str
    source: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("rpmbuild", "rpm", "createrepo_c", "bwrap")
    if not BUSYBOX:
        pytest.skip("needs a static busybox")
    tmp, cache = tmp_path_factory.mktemp("rpmcomposeremove"), cache_root() / "rpm-oracle"
    root = tmp / "rootfs"
    root.mkdir()
    run([*rpm_root("--root", root), "-i", *(build(s, cache) for s in base_specs(BUSYBOX))])
    run([*rpm_root("--root", root), "--nodeps", "-i",
         *(build(s, cache) for s in _specs())])  # type: ignore[arg-type]
    empty = tmp / "rpmrepo"
    empty.mkdir()
    run(["createrepo_c", "--quiet", empty])
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    base = commit_directory(repo, root, branch="base/rpm").checksum
    with http_server(empty) as served:
        yield World(repo, base, f"rpm-md {served.url}")


def _compose(w: World, branch: str, *remove: str) -> ComposeResult:
    return compose(w.repo, ComposeRequest(base=w.base, branch=branch, sources=(w.source,),
                                          remove=remove))


def test_remove_runs_preun_over_the_files_and_postun_after(world: World, tmp_path: Path) -> None:
    r = _compose(world, "r/plain", "plain-gone")
    assert r.checksum is not None
    co = tmp_path / "co"
    checkout(world.repo, r.checksum, co)
    log = (co / MARK.lstrip("/")).read_text()
    assert log.startswith("preun 0 x\npostun 0 ")
    assert "plain-gone" not in log.split("postun 0 ")[1]
    assert not (co / "usr/share/plain-gone").exists()


def test_a_lua_scriptlet_is_refused_naming_the_package(world: World) -> None:
    with pytest.raises(ScriptError, match="%postun of lua-gone is a lua scriptlet"):
        _compose(world, "r/lua", "lua-gone")
    assert world.repo.read_ref("r/lua") is None


def test_a_failing_preun_aborts(world: World) -> None:
    with pytest.raises(ScriptError, match="%preun script of package fail-gone failed"):
        _compose(world, "r/fail", "fail-gone")
    assert world.repo.read_ref("r/fail") is None
