"""Importing .rpm files: compared against rpm's own view of the same package."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from importers.caps import caps_xattr
from importers.model import DepKind, Op
from importers.owners import OwnerMap
from importers.pkgcache import import_package
from importers.rpm import open_rpm
from store.repo import Repo
from tests.importers.builders import build_rpm, rpm_dump
from tests.importers.conftest import file_content, tree_listing
from tests.util import require_tool

INSTALL = """\
mkdir -p %{buildroot}/usr/bin %{buildroot}/etc %{buildroot}/usr/share/sample/empty %{buildroot}/srv
printf 'echo sample\\n' > %{buildroot}/usr/bin/sample
ln %{buildroot}/usr/bin/sample %{buildroot}/usr/bin/sample-hl
ln -s sample %{buildroot}/usr/bin/sample-link
ln -s /etc/sample.conf %{buildroot}/usr/share/sample/conf-link
echo conf > %{buildroot}/etc/sample.conf
echo data > %{buildroot}/srv/data
echo ping > %{buildroot}/usr/bin/ping
"""
FILES = """\
%attr(0755,root,root) /usr/bin/sample
/usr/bin/sample-hl
/usr/bin/sample-link
%caps(cap_net_raw=ep) %attr(0755,root,root) /usr/bin/ping
%dir %attr(0750,daemon,daemon) /usr/share/sample
%dir /usr/share/sample/empty
/usr/share/sample/conf-link
%config(noreplace) %attr(0640,root,adm) /etc/sample.conf
%attr(0600,nosuchuser,nosuchgroup) /srv/data
%ghost /var/log/sample.log
"""
EXTRA = """\
Requires: foo >= 1.2
Recommends: bar
Conflicts: baz < 2
Obsoletes: oldsample <= 1.0
Provides: sample-cap = 3
%post -p /bin/bash
echo post
%pre
echo pre
"""


@pytest.fixture(scope="module")
def sample_rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("rpmbuild")
    out = {}
    for comp, payload in [("gzip", "w9.gzdio"), ("xz", "w6.xzdio"), ("zstd", "w19.zstdio"),
                          ("bzip2", "w9.bzdio")]:
        d = tmp_path_factory.mktemp(f"rpm-{comp}")
        out[comp] = build_rpm(d, "sample", install=INSTALL, files=FILES, extra=EXTRA,
                              version="2.1", release="3.fc40", payload=payload)
    return out


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "bzip2"])
def test_rpmbuild_rpm_matches_rpm_dump(sample_rpms: dict[str, Path], repo: Repo,
                                       compression: str) -> None:
    rpm = sample_rpms[compression]
    owners = OwnerMap()
    result = import_package(repo, rpm, owners=owners)
    assert result.ref == "strata/pkg/sample/2.1-3.fc40.noarch"
    ours = tree_listing(repo, result.ref)
    dump = rpm_dump(rpm)
    for path, (mode, user, group, target) in dump.items():
        if path == "var/log/sample.log":
            assert path not in ours
            continue
        assert ours[path][0] == mode, path
        assert ours[path][1:3] == (owners.uid(user), owners.gid(group)), path
        assert ours[path][3] == target, path
    assert set(ours) - set(dump) == {"", "usr", "usr/share", "etc", "srv", "usr/bin"} - set(dump)
    assert ours["etc/sample.conf"][1:3] == (0, 4)
    assert ours["usr/share/sample"][1:3] == (1, 1)
    assert ours["srv/data"][1:3] == (0, 0)
    assert file_content(repo, result.ref, "usr/bin/sample-hl") == b"echo sample\n"
    assert file_content(repo, result.ref, "usr/bin/sample") == b"echo sample\n"


def test_header_metadata(sample_rpms: dict[str, Path]) -> None:
    meta = open_rpm(sample_rpms["xz"]).meta
    assert (meta.name, meta.version, meta.release, meta.arch, meta.epoch) == (
        "sample", "2.1", "3.fc40", "noarch", 0)
    requires = {g[0].name: g[0] for g in meta.relations(DepKind.DEPENDS)}
    assert requires["foo"].op == Op.GE and requires["foo"].version == "1.2"
    assert [g[0].name for g in meta.relations(DepKind.RECOMMENDS)] == ["bar"]
    assert meta.relations(DepKind.CONFLICTS)[0][0].op == Op.LT
    assert meta.relations(DepKind.OBSOLETES)[0][0].op == Op.LE
    assert "sample-cap" in {g[0].name for g in meta.relations(DepKind.PROVIDES)}
    scripts = {s.name: s for s in meta.scripts}
    assert scripts["postin"].interpreter == "/bin/bash" and "echo post" in scripts["postin"].body
    assert scripts["prein"].interpreter == "/bin/sh"
    files = {f.path: f for f in meta.files}
    assert files["etc/sample.conf"].config and files["var/log/sample.log"].ghost
    assert files["usr/bin/ping"].caps == "cap_net_raw=ep"
    assert files["usr/bin/sample-link"].link == "sample"
    assert meta.conffiles == ("etc/sample.conf",)


def test_owners_from_target_passwd(sample_rpms: dict[str, Path], repo: Repo) -> None:
    owners = OwnerMap.from_files("root:x:0:0::/:/bin/sh\nnosuchuser:x:501:501::/:/bin/sh\n"
                                 "daemon:x:2:2::/:/bin/sh\n",
                                 "root:x:0:\nadm:x:44:\nnosuchgroup:x:502:\ndaemon:x:2:\n")
    ours = tree_listing(repo, import_package(repo, sample_rpms["gzip"], owners=owners).ref)
    assert ours["srv/data"][1:3] == (501, 502)
    assert ours["etc/sample.conf"][1:3] == (0, 44)
    assert ours["usr/share/sample"] == (stat.S_IFDIR | 0o750, 2, 2, "")


@pytest.mark.parametrize("text", ["cap_net_raw=ep", "cap_net_admin,cap_net_raw+ep",
                                  "cap_sys_admin+p", "cap_setuid,cap_bpf=eip"])
def test_caps_xattr_matches_setcap(tmp_path: Path, text: str) -> None:
    require_tool("setcap")
    f = tmp_path / "f"
    f.write_bytes(b"x")
    from tests.util import run
    run(["setcap", text, f])
    assert caps_xattr(text) == os.getxattr(f, "security.capability")


def test_file_capabilities_become_xattrs(sample_rpms: dict[str, Path], repo: Repo) -> None:
    from store.mtree import MutableTree
    ref = import_package(repo, sample_rpms["gzip"]).ref
    csum = MutableTree.from_commit(repo, ref).lookup("usr/bin/ping")
    assert isinstance(csum, str)
    meta, _content = repo.load_file(csum)
    assert meta.xattrs == ((b"security.capability", caps_xattr("cap_net_raw=ep")),)


def test_header_string_counts_are_bounded_by_the_header_size() -> None:
    """65,535 tags that each claim every NUL of a 1 MiB store as their strings: the
    reader must refuse once the claims exceed what the header can hold, not walk the
    store 65,535 times (about 7e10 steps before the bound; a subprocess timeout makes
    a regression fail instead of hanging)."""
    import subprocess
    import sys

    code = """
import struct, sys
from importers.errors import PackageFormatError
from importers.rpmheader import parse_blob
il, dl = 0xFFFF, 1 << 20
index = b"".join(struct.pack(">IIiI", 5000 + i, 8, 0, dl) for i in range(il))
try:
    parse_blob(struct.pack(">II", il, dl) + index + bytes(dl), "hostile.rpm")
except PackageFormatError as e:
    print(e)
    sys.exit(0)
sys.exit("accepted")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert "rpm header entries overlap in hostile.rpm" in proc.stdout


def test_file_triggers_read_with_prefixes_priorities_and_interpreters(tmp_path: Path) -> None:
    require_tool("rpmbuild")
    rpm = build_rpm(tmp_path, "trig", install="mkdir -p %{buildroot}/usr/share/trig\n",
                    files="%dir /usr/share/trig\n",
                    extra="%filetriggerin -P 2000 -- /usr/share/a /usr/lib/b\necho in\n"
                          "%filetriggerin -p /bin/bash -- /usr/share/c\necho second\n"
                          "%transfiletriggerin -- /usr/share/a\necho trans\n"
                          "%filetriggerun -- /usr/share/a\necho un\n")
    meta = open_rpm(rpm).meta
    found = sorted((s.name, s.body.strip(), s.interpreter, s.prefixes, s.priority)
                   for s in meta.scripts if s.prefixes)
    # rpmbuild stores a trigger's prefixes sorted
    assert found == [
        ("filetriggerin", "echo in", "/bin/sh", ("/usr/lib/b", "/usr/share/a"), 2000),
        ("filetriggerin", "echo second", "/bin/bash", ("/usr/share/c",), 1000000),
        ("filetriggerun", "echo un", "/bin/sh", ("/usr/share/a",), 1000000),
        ("transfiletriggerin", "echo trans", "/bin/sh", ("/usr/share/a",), 1000000)]
