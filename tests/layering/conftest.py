"""Fixtures for layering: a committed deb base image and a served apt repository."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import apt_repo, build_deb, deb_base_rootfs
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.store.servers import Served, http_server
from tests.util import require_tool

POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  echo "configured $DPKG_MAINTSCRIPT_PACKAGE" > /var/lib/hello-configured
  echo "hello-postinst ran" > /etc/hello.d/postinst-mark
fi
"""


def _deb(d: Path, name: str, version: str = "1.0", **kw: object) -> Path:
    return build_deb(d, name, version, **kw)  # type: ignore[arg-type]


def fixture_debs(d: Path) -> list[Path]:
    """The fixture packages: versioned deps, alternatives, virtuals, conflicts, Replaces,
    Recommends, conffiles, scripts, one failing script."""
    d.mkdir(parents=True, exist_ok=True)
    return [
        _deb(d, "libgreet", "1.0-1", arch="amd64",
                  files={"usr/lib/libgreet.so.1": b"greet library 1.0\n"},
                  control="Depends: libc6 (>= 2.30)\n"),
        _deb(d, "libgreet", "2.0-1", arch="amd64",
                  files={"usr/lib/libgreet.so.1": b"greet library 2.0\n"},
                  control="Depends: libc6 (>= 2.99)\n"),
        _deb(d, "hello", "2.10-3", arch="amd64",
                  files={"usr/bin/hello": b"#!/bin/sh\necho 'Hello, layered world!'\n",
                         "etc/hello.d/hello.conf": b"greeting=hello\n",
                         "var/lib/hello/state": b"initial\n"},
                  control="Depends: libgreet (>= 1.0), pager | more-utils\n"
                          "Recommends: hello-doc\n",
                  scripts={"postinst": POSTINST}, conffiles=["etc/hello.d/hello.conf"]),
        _deb(d, "hello-doc", "2.10-3", files={"usr/share/doc/hello/README": b"docs\n"}),
        _deb(d, "less", "590-2", arch="amd64", files={"usr/bin/less": b"#!/bin/sh\ncat\n"},
                  control="Provides: pager\n"),
        _deb(d, "needs-new-libc", "1.0", control="Depends: libc6 (>= 3.0)\n",
                  files={"usr/share/nnl": b"x\n"}),
        _deb(d, "clash-a", "1.0", files={"usr/share/clash/file": b"from a\n"}),
        _deb(d, "clash-b", "1.0", files={"usr/share/clash/file": b"from b\n"}),
        _deb(d, "clash-c", "1.0", files={"usr/share/clash/file": b"from c\n"},
                  control="Replaces: clash-a\n"),
        _deb(d, "hates-hello", "1.0", control="Conflicts: hello\n",
                  files={"usr/share/hates": b"x\n"}),
        _deb(d, "broken-post", "1.0", files={"usr/share/broken": b"x\n"},
                  scripts={"postinst": "#!/bin/sh\necho 'about to fail' >&2\nexit 3\n"}),
        _deb(d, "over-base", "1.0", files={"etc/motd": b"package motd\n"}),
        _deb(d, "needs-busybox", "1.0", control="Depends: busybox (>= 1:1.30)\n",
                  files={"usr/share/nb": b"x\n"}),
        _deb(d, "file-over-dir", "1.0", files={"usr/lib/modules": b"not a directory\n"}),
        _deb(d, "dir-over-file", "1.0", files={"usr/etc/hostname/inside": b"x\n"}),
    ]


@dataclass
class DebWorld:
    repo: Repo
    base: str
    source: str
    served: Served
    debs: Path


@pytest.fixture(scope="module")
def deb_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebWorld]:
    require_tool("dpkg-deb", "apt-ftparchive", "bwrap")
    tmp = tmp_path_factory.mktemp("debworld")
    debs = fixture_debs(tmp / "debs")
    apt_repo(tmp / "apt", debs)
    rootfs = deb_base_rootfs(tmp / "rootfs")
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    base = commit_directory(repo, rootfs, branch="base/stable", subject="base",
                            metadata=[("version", "1")]).checksum
    with http_server(tmp / "apt") as served:
        yield DebWorld(repo, base, f"deb [trusted=yes] {served.url} stable main", served,
                       tmp / "debs")
