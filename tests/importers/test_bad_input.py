"""Hostile and broken packages: each refused with one ``error:`` line naming package and member.

Every case runs the real CLI and checks: exit 1, a single ``error:`` line on
stderr naming the package file and the member, no cache ref, no object
published, no staging left in the repository's tmp/ and nothing in $TMPDIR.
"""

from __future__ import annotations

import os
import struct
import tarfile
from pathlib import Path

import pytest

from store.repo import Repo
from tests.importers.builders import (
    build_deb,
    build_rpm,
    hand_deb,
    replace_rpm_payload,
    tar_bytes,
    tinfo,
)
from tests.util import StrataRunner, require_tool

D = tarfile.DIRTYPE
ROOT = tinfo("./", kind=D, mode=0o755)


def assert_refused(strata: StrataRunner, tmp_path: Path, pkg: Path, *needles: str,
                   env: dict[str, str] | None = None) -> str:
    repo = Repo.init(tmp_path / "repo")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = strata("--repo", repo.path, "import", pkg, check=False,
                  env={"TMPDIR": str(tmpdir), **(env or {})})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert pkg.name in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""
    assert repo.list_refs() == {}
    assert not any(os.scandir(repo.path / "objects"))
    assert not [n for n in os.listdir(repo.tmp_dir) if n.startswith("staging-")]
    assert not any(os.scandir(tmpdir))
    return lines[0]


# ---- .deb ------------------------------------------------------------------------------

def test_deb_dotdot_path(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("../etc/passwd", data=b"pwned")])
    line = assert_refused(strata, tmp_path, deb, "'../etc/passwd'", "data.tar.xz")
    assert line == "error: unsafe path '../etc/passwd' in data.tar.xz of evil_1.0_all.deb"


def test_deb_absolute_path(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("/etc/passwd", data=b"pwned")])
    assert_refused(strata, tmp_path, deb, "'/etc/passwd'", "data.tar.xz")


def test_deb_symlink_then_file_through_it(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("./link", kind=tarfile.SYMTYPE, link="/tmp"),
                                      tinfo("./link/x", data=b"x")])
    assert_refused(strata, tmp_path, deb, "'./link/x'", "symlink 'link'", "data.tar.xz")


def test_deb_hardlink_outside_package(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("./x", kind=tarfile.LNKTYPE,
                                                  link="./etc/shadow")])
    assert_refused(strata, tmp_path, deb, "hardlink './x'", "outside the package")


def test_deb_hardlink_dotdot_target(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("./x", kind=tarfile.LNKTYPE,
                                                  link="../../etc/shadow")])
    assert_refused(strata, tmp_path, deb, "'../../etc/shadow'")


def test_deb_device_node(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("./dev/", kind=D, mode=0o755),
                                      tinfo("./dev/null", kind=tarfile.CHRTYPE, mode=0o666)])
    assert_refused(strata, tmp_path, deb, "device node './dev/null'")


def test_deb_truncated_file(strata: StrataRunner, tmp_path: Path) -> None:
    require_tool("dpkg-deb")
    good = build_deb(tmp_path, "trunc", files={"usr/share/t/data": os.urandom(20000)})
    bad = tmp_path / "trunc_cut.deb"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size - 5000])
    assert_refused(strata, tmp_path, bad, "data.tar.xz", "larger than the file")


def test_deb_truncated_data_tar(strata: StrataRunner, tmp_path: Path) -> None:
    full = tar_bytes([ROOT, tinfo("./big", data=os.urandom(50000))], "xz")
    deb = hand_deb(tmp_path, "evil", [], data_bytes=full[: len(full) // 2])
    assert_refused(strata, tmp_path, deb, "data.tar.xz")


def test_deb_corrupted_xz_stream(strata: StrataRunner, tmp_path: Path) -> None:
    full = bytearray(tar_bytes([ROOT, tinfo("./big", data=os.urandom(60000))], "xz"))
    for i in range(len(full) // 2, len(full) // 2 + 64):
        full[i] ^= 0x5A
    deb = hand_deb(tmp_path, "evil", [], data_bytes=bytes(full))
    assert_refused(strata, tmp_path, deb, "data.tar.xz")


def test_deb_wrong_debian_binary(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT], debian_binary=b"3.0\n")
    assert_refused(strata, tmp_path, deb, "debian-binary")


def test_deb_ar_member_larger_than_file(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("./a", data=b"a")],
                   size_override={"control.tar.xz": 10_000_000})
    assert_refused(strata, tmp_path, deb, "'control.tar.xz'", "larger than the file")


def test_deb_bomb_beyond_installed_size(strata: StrataRunner, tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("./zeros", data=bytes(40 << 20))],
                   control_extra="Installed-Size: 8\n")
    assert_refused(strata, tmp_path, deb, "'./zeros'", "data.tar.xz", "decompression bomb")


def test_deb_bomb_beyond_cap_without_installed_size(strata: StrataRunner,
                                                   tmp_path: Path) -> None:
    deb = hand_deb(tmp_path, "evil", [ROOT, tinfo("./zeros", data=bytes(40 << 20))])
    assert_refused(strata, tmp_path, deb, "'./zeros'", "beyond 10485760 bytes",
                   env={"STRATA_IMPORT_CAP": str(10 << 20)})


# ---- .rpm ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("rpmbuild")
    d = tmp_path_factory.mktemp("small-rpm")
    return build_rpm(d, "small", install="mkdir -p %{buildroot}/usr/bin\n"
                     "echo hi > %{buildroot}/usr/bin/small\n", files="/usr/bin/small")


def test_rpm_dotdot_cpio_name(strata: StrataRunner, tmp_path: Path, small_rpm: Path) -> None:
    bad = replace_rpm_payload(small_rpm, tmp_path / "evil-1.0-1.noarch.rpm",
                              [("../etc/passwd", 0o100644, b"pwned")])
    assert_refused(strata, tmp_path, bad, "'../etc/passwd'", "payload")


def test_rpm_truncated_header(strata: StrataRunner, tmp_path: Path, small_rpm: Path) -> None:
    bad = tmp_path / "cut-1.0-1.noarch.rpm"
    bad.write_bytes(small_rpm.read_bytes()[:1500])
    assert_refused(strata, tmp_path, bad, "truncated", "header")


def test_rpm_truncated_payload(strata: StrataRunner, tmp_path: Path, small_rpm: Path) -> None:
    big = replace_rpm_payload(small_rpm, tmp_path / "big.rpm",
                              [("./usr/bin/small", 0o100755, os.urandom(30000))])
    bad = tmp_path / "cutpayload-1.0-1.noarch.rpm"
    bad.write_bytes(big.read_bytes()[:-15000])
    assert_refused(strata, tmp_path, bad, "payload")


def test_rpm_absurd_header_sizes(strata: StrataRunner, tmp_path: Path, small_rpm: Path) -> None:
    data = bytearray(small_rpm.read_bytes())
    il, dl = struct.unpack_from(">II", data, 96 + 8)
    main = 96 + 16 + 16 * il + dl
    main += (8 - main % 8) % 8
    assert data[main:main + 4] == b"\x8e\xad\xe8\x01"
    struct.pack_into(">II", data, main + 8, 0x7FFFFFFF, 0x7FFFFFFF)
    bad = tmp_path / "absurd-1.0-1.noarch.rpm"
    bad.write_bytes(bytes(data))
    assert_refused(strata, tmp_path, bad, "absurd sizes", "header")


def test_rpm_bomb_beyond_header_file_sizes(strata: StrataRunner, tmp_path: Path,
                                           small_rpm: Path) -> None:
    bad = replace_rpm_payload(small_rpm, tmp_path / "bomb-1.0-1.noarch.rpm",
                              [("./usr/bin/small", 0o100755, bytes(40 << 20))])
    assert_refused(strata, tmp_path, bad, "'./usr/bin/small'", "payload", "decompression bomb")


def test_rpm_member_not_in_header(strata: StrataRunner, tmp_path: Path, small_rpm: Path) -> None:
    bad = replace_rpm_payload(small_rpm, tmp_path / "extra-1.0-1.noarch.rpm",
                              [("./usr/bin/small", 0o100755, b"hi\n"),
                               ("./etc/cron.d/backdoor", 0o100644, b"* * * * * root sh\n")])
    assert_refused(strata, tmp_path, bad, "'etc/cron.d/backdoor'", "not in the header")


def test_not_a_package(strata: StrataRunner, tmp_path: Path) -> None:
    bad = tmp_path / "readme.deb"
    bad.write_text("hello\n")
    assert_refused(strata, tmp_path, bad, "not a .deb or .rpm")


def test_rpm_corrupted_payload_byte(strata: StrataRunner, tmp_path: Path, small_rpm: Path) -> None:
    data = bytearray(small_rpm.read_bytes())
    data[-30] ^= 0x01
    bad = tmp_path / "flipped-1.0-1.noarch.rpm"
    bad.write_bytes(bytes(data))
    assert_refused(strata, tmp_path, bad, "payload")


def test_rpm_corrupted_header_byte(strata: StrataRunner, tmp_path: Path, small_rpm: Path) -> None:
    data = bytearray(small_rpm.read_bytes())
    pos = data.index(b"test small")
    data[pos] ^= 0x20
    bad = tmp_path / "hdr-1.0-1.noarch.rpm"
    bad.write_bytes(bytes(data))
    assert_refused(strata, tmp_path, bad, "header digest mismatch")


def test_a_bad_package_among_good_ones_refuses_them_all(strata: StrataRunner,
                                                       tmp_path: Path) -> None:
    """Several packages unpack in two processes (this one and a forked one, taking turns
    from one queue): whichever gets the bad one, the error and the all-or-nothing hold."""
    good = [build_deb(tmp_path / f"g{i}", f"good{i}", files={f"usr/share/good{i}/f": b"x\n" * i})
            for i in range(1, 5)]
    evil = hand_deb(tmp_path, "evil", [ROOT, tinfo("../etc/passwd", data=b"pwned")])
    repo = Repo.init(tmp_path / "repo")
    for order in ([*good, evil], [evil, *good], [*good[:2], evil, *good[2:]]):
        proc = strata("--repo", repo.path, "import", *order, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == ("error: unsafe path '../etc/passwd' in data.tar.xz "
                                       "of evil_1.0_all.deb")
        assert repo.list_refs() == {}
        assert not any(os.scandir(repo.path / "objects"))
        assert not [n for n in os.listdir(repo.tmp_dir) if "staging-" in n]


def test_an_unpacking_process_that_dies_fails_the_import_cleanly(strata: StrataRunner,
                                                                tmp_path: Path) -> None:
    debs = [build_deb(tmp_path / f"p{i}", f"pkg{i}", files={f"usr/share/pkg{i}/f": b"y\n"})
            for i in range(4)]
    repo = Repo.init(tmp_path / "repo")
    proc = strata("--repo", repo.path, "import", *debs, check=False,
                  env={"STRATA_TEST_FAIL_AT": "pkgcache-forked"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: the unpacking process died")
    assert repo.list_refs() == {} and not any(os.scandir(repo.path / "objects"))
    done = strata("--repo", repo.path, "import", *debs).stdout.split()
    assert len(done) == 4 and set(repo.list_refs()) == set(done)
