"""compose on an rpm image with a real rpmdb (installed by ``rpm --root``) and an rpm-md repo."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import BUSYBOX
from layering.compose import ComposeRequest, compose
from layering.dbinfo import packages
from layering.errors import DepsolveError, ScriptError
from store.checkout import checkout
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.importers.builders import build_rpm
from tests.store.servers import http_server
from tests.util import require_tool, run

DBPATH = "/usr/lib/sysimage/rpm"
NOSTRIP = ("%global _binaries_in_noarch_packages_terminate_build 0\n"
           "%global __os_install_post %{nil}\n")


def _rpm(d: Path, name: str, version: str = "1.0", **kw: str) -> Path:
    sub = d / f"{name}-{version}"
    sub.mkdir(parents=True, exist_ok=True)
    return build_rpm(sub, name, version=version, **kw)


def base_rpms(d: Path) -> list[Path]:
    return [
        _rpm(d, "filesystem", "3.18", install="mkdir -p %{buildroot}/usr/bin %{buildroot}/etc "
             "%{buildroot}/var/lib %{buildroot}/usr/lib/modules/6.1.0-test\n"
             "ln -s usr/bin %{buildroot}/bin\n"
             "echo 'root:x:0:0:root:/root:/bin/sh' > %{buildroot}/etc/passwd\n"
             "echo 'root:x:0:' > %{buildroot}/etc/group\n"
             "echo 'ID=stratarpm' > %{buildroot}/etc/os-release\n"
             "echo kernel > %{buildroot}/usr/lib/modules/6.1.0-test/vmlinuz\n"
             "echo initrd > %{buildroot}/usr/lib/modules/6.1.0-test/initramfs.img\n",
             files="/bin\n%dir /usr/bin\n%dir /var/lib\n%config /etc/passwd\n%config /etc/group\n"
                   "/etc/os-release\n/usr/lib/modules/6.1.0-test\n"),
        _rpm(d, "busybox", "1.35", extra=NOSTRIP + "Requires: filesystem\nProvides: /bin/sh\n",
             install=f"mkdir -p %{{buildroot}}/usr/bin\ncp {BUSYBOX} %{{buildroot}}/usr/bin/busybox\n"
                     "for a in sh cat echo mkdir ls; do ln -s busybox %{buildroot}/usr/bin/$a; done\n",
             files="/usr/bin/busybox\n/usr/bin/sh\n/usr/bin/cat\n/usr/bin/echo\n/usr/bin/mkdir\n"
                   "/usr/bin/ls\n"),
    ]


def repo_rpms(d: Path) -> list[Path]:
    return [
        _rpm(d, "libgreet", "1.0", install="mkdir -p %{buildroot}/usr/lib\n"
             "echo v1 > %{buildroot}/usr/lib/libgreet.so.1\n", files="/usr/lib/libgreet.so.1\n"),
        _rpm(d, "libgreet", "2.0", extra="Requires: filesystem >= 9\n",
             install="mkdir -p %{buildroot}/usr/lib\necho v2 > %{buildroot}/usr/lib/libgreet.so.1\n",
             files="/usr/lib/libgreet.so.1\n"),
        _rpm(d, "greet", "3.1", extra="Requires: libgreet >= 1.0\nRequires: (pager or less)\n"
             "Requires: /bin/sh\nRecommends: greet-doc\n"
             "%post\nmkdir -p /var/lib/greet\necho \"post arg $1\" > /var/lib/greet/post\n",
             install="mkdir -p %{buildroot}/usr/bin\n"
                     "printf '#!/bin/sh\\necho greetings\\n' > %{buildroot}/usr/bin/greet\n"
                     "chmod 755 %{buildroot}/usr/bin/greet\n",
             files="/usr/bin/greet\n"),
        _rpm(d, "greet-doc", "3.1", install="mkdir -p %{buildroot}/usr/share/doc/greet\n"
             "echo doc > %{buildroot}/usr/share/doc/greet/README\n", files="/usr/share/doc/greet\n"),
        _rpm(d, "less", "590", extra="Provides: pager\n", install="mkdir -p %{buildroot}/usr/share/less\n"
             "echo less > %{buildroot}/usr/share/less/x\n", files="/usr/share/less\n"),
        _rpm(d, "newbusybox", "2.0", extra="Obsoletes: busybox < 2\nProvides: busybox = 2.0\n",
             install="mkdir -p %{buildroot}/usr/share/nb\necho x > %{buildroot}/usr/share/nb/x\n",
             files="/usr/share/nb\n"),
        _rpm(d, "badpost", "1.0", extra="%post\necho failing >&2\nexit 4\n",
             install="mkdir -p %{buildroot}/usr/share/bp\necho x > %{buildroot}/usr/share/bp/x\n",
             files="/usr/share/bp\n"),
    ]


@dataclass
class RpmWorld:
    repo: Repo
    base: str
    source: str


@pytest.fixture(scope="module")
def rpm_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpmWorld]:
    require_tool("rpmbuild", "rpm", "createrepo_c", "bwrap")
    tmp = tmp_path_factory.mktemp("rpmworld")
    root = tmp / "rootfs"
    root.mkdir()
    run(["rpm", "--root", root, "--dbpath", DBPATH, "--nodeps", "-i", *base_rpms(tmp / "base")])
    repo_dir = tmp / "rpmrepo"
    repo_dir.mkdir()
    for p in repo_rpms(tmp / "pkgs"):
        p.rename(repo_dir / p.name)
    run(["createrepo_c", "--quiet", repo_dir])
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    base = commit_directory(repo, root, branch="base/rpm").checksum
    with http_server(repo_dir) as served:
        yield RpmWorld(repo, base, f"rpm-md {served.url}")


def _compose(w: RpmWorld, branch: str, **kw: object) -> object:
    return compose(w.repo, ComposeRequest(base=w.base, branch=branch, sources=(w.source,), **kw))  # type: ignore[arg-type]


def test_rpm_resolution_rich_deps_file_deps_and_older_version(rpm_world: RpmWorld,
                                                              tmp_path: Path) -> None:
    r = _compose(rpm_world, "r/greet", install=("greet",))
    assert [p.nevra for p in r.resolution.install] == [  # type: ignore[attr-defined]
        "greet-3.1-1.noarch", "greet-doc-3.1-1.noarch", "less-590-1.noarch",
        "libgreet-1.0-1.noarch"]
    co = tmp_path / "co"
    checkout(rpm_world.repo, r.checksum, co)  # type: ignore[attr-defined]
    assert (co / "var/lib/greet/post").read_text() == "post arg 1\n"
    qa = run(["rpm", "--root", co, "--dbpath", DBPATH, "-qa", "--qf", "%{NAME}\\n"]).stdout.split()
    assert sorted(qa) == ["busybox", "filesystem", "greet", "greet-doc", "less", "libgreet"]
    shutil.copytree(co / "usr/etc", co / "etc", symlinks=True)  # what a deployment's /etc starts as
    # OSTree stores no mtimes (every file has mtime 0), so rpm -V checks all but mtime,
    # as on any rpm-ostree system.
    verify = subprocess.run(["rpm", "--root", co, "--dbpath", DBPATH, "-V", "--nomtime", "-a"],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert [p.name for p in packages(rpm_world.repo, r.checksum)[1]] == sorted(qa)  # type: ignore[attr-defined]


def test_obsoleted_base_package_never_installed_beside_obsoleter(rpm_world: RpmWorld) -> None:
    with pytest.raises(DepsolveError):
        _compose(rpm_world, "r/obs", install=("newbusybox",))
    assert rpm_world.repo.read_ref("r/obs") is None


def test_failing_post_aborts(rpm_world: RpmWorld) -> None:
    with pytest.raises(ScriptError, match="%post script of package badpost failed"):
        _compose(rpm_world, "r/bad", install=("badpost",))
    assert rpm_world.repo.read_ref("r/bad") is None
