"""The package cache: refs, metadata, re-import, atomicity, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from importers.errors import PackageFormatError
from importers.model import PackageMeta
from importers.pkgcache import (
    cache_ref,
    escape_ref_part,
    import_package,
    import_packages,
    list_cached,
    meta_of_commit,
)
from store.repo import Repo
from tests.importers.builders import build_deb, build_rpm, hand_deb, tinfo
from tests.util import ROOT, StrataRunner, require_tool, run


@pytest.mark.parametrize(("text", "escaped"), [
    ("x86_64", "x86__64"), ("1:2.0~rc1-3", "1_3A2.0_7Erc1-3"), ("g++", "g_2B_2B"),
    ("a.b-C9", "a.b-C9"), ("é", "_C3_A9"),
])
def test_escape_like_rpm_ostree(text: str, escaped: str) -> None:
    assert escape_ref_part(text) == escaped


@pytest.fixture
def two_packages(tmp_path: Path) -> list[Path]:
    require_tool("dpkg-deb", "rpmbuild")
    deb = build_deb(tmp_path, "alpha", "1.0-1", files={"usr/bin/alpha": b"alpha\n"})
    rpm = build_rpm(tmp_path, "beta", install="mkdir -p %{buildroot}/usr/bin\n"
                    "echo beta > %{buildroot}/usr/bin/beta\n", files="/usr/bin/beta")
    return [deb, rpm]


def test_cli_prints_one_cache_ref_per_line_and_ostree_accepts_them(
        strata: StrataRunner, tmp_path: Path, two_packages: list[Path]) -> None:
    require_tool("ostree")
    repo = Repo.init(tmp_path / "repo")
    proc = strata("--repo", repo.path, "import", *two_packages)
    assert proc.stdout.splitlines() == ["strata/pkg/alpha/1.0-1.all",
                                        "strata/pkg/beta/1.0-1.noarch"]
    run(["ostree", f"--repo={repo.path}", "fsck"])
    listing = run(["ostree", f"--repo={repo.path}", "ls", "-R", "strata/pkg/beta/1.0-1.noarch"])
    assert "/usr/bin/beta" in listing.stdout
    cat = run(["ostree", f"--repo={repo.path}", "cat", "strata/pkg/alpha/1.0-1.all",
               "/usr/bin/alpha"])
    assert cat.stdout == "alpha\n"


def test_metadata_round_trips_and_reimport_is_skipped(repo: Repo,
                                                      two_packages: list[Path]) -> None:
    first = import_packages(repo, two_packages)
    assert [r.skipped for r in first] == [False, False]
    for r in first:
        stored = meta_of_commit(repo, r.commit)
        assert stored == r.meta
        assert PackageMeta.from_dict(stored.to_dict()) == stored
        assert len(stored.checksum) == 64
    objects_before = sorted(p for p in (repo.path / "objects").rglob("*"))
    second = import_packages(repo, two_packages)
    assert [r.skipped for r in second] == [True, True]
    assert [r.commit for r in second] == [r.commit for r in first]
    assert sorted(p for p in (repo.path / "objects").rglob("*")) == objects_before
    assert list_cached(repo) == {r.ref: r.commit for r in first}


def test_changed_package_file_is_reimported(tmp_path: Path, repo: Repo) -> None:
    require_tool("dpkg-deb")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = build_deb(tmp_path / "a", "same", "1.0", files={"usr/share/same/x": b"one\n"})
    b = build_deb(tmp_path / "b", "same", "1.0", files={"usr/share/same/x": b"two\n"})
    ra, rb = import_package(repo, a), import_package(repo, b)
    assert ra.ref == rb.ref and not rb.skipped and ra.commit != rb.commit
    assert repo.read_ref(ra.ref) == rb.commit


def test_batch_is_all_or_nothing(strata: StrataRunner, tmp_path: Path,
                                 two_packages: list[Path]) -> None:
    evil = hand_deb(tmp_path, "evil", [tinfo("../x", data=b"x")])
    repo = Repo.init(tmp_path / "repo")
    proc = strata("--repo", repo.path, "import", *two_packages, evil, check=False)
    assert proc.returncode == 1 and "evil_1.0_all.deb" in proc.stderr
    assert repo.list_refs() == {}


@pytest.mark.parametrize("point", ["pkgcache-before-refs", "before-refs"])
def test_crash_before_refs_leaves_no_cache_ref(strata: StrataRunner, tmp_path: Path,
                                               two_packages: list[Path], point: str) -> None:
    repo = Repo.init(tmp_path / "repo")
    proc = strata("--repo", repo.path, "import", *two_packages, check=False,
                  env={"STRATA_TEST_FAIL_AT": point})
    assert proc.returncode != 0
    assert repo.list_refs() == {}
    proc = strata("--repo", repo.path, "import", *two_packages)
    assert len(proc.stdout.splitlines()) == 2


def test_cap_defaults_agree() -> None:
    from importers import payload, pkgcache
    assert pkgcache.DEFAULT_CAP == payload.DEFAULT_CAP


def test_lost_index_is_rebuilt_and_stale_index_ignored(repo: Repo,
                                                       two_packages: list[Path]) -> None:
    first = import_packages(repo, two_packages)
    index = repo.tmp_dir / "cache" / "pkgcache-index.json"
    assert index.exists()
    index.unlink()
    assert [r.skipped for r in import_packages(repo, two_packages)] == [True, True]
    assert index.exists()
    data = json.loads(index.read_text())
    data["packages"][first[0].sha256] = ["strata/pkg/nonsense/1.all", "0" * 64, 2, "x"]
    data["packages"][first[1].sha256][1] = "1" * 64
    index.write_text(json.dumps(data))
    again = import_packages(repo, two_packages)
    assert [r.skipped for r in again] == [True, True]
    assert [r.commit for r in again] == [r.commit for r in first]
    index.write_text("{not json")
    assert [r.skipped for r in import_packages(repo, two_packages)] == [True, True]


def test_stat_cache_skips_hashing_and_notices_a_rewritten_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo: Repo) -> None:
    from importers import pkgindex

    require_tool("dpkg-deb")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = build_deb(tmp_path / "a", "same", "1.0", files={"usr/share/same/x": b"one\n"})
    b = build_deb(tmp_path / "b", "same", "1.0", files={"usr/share/same/x": b"two\n"})
    import_package(repo, a)
    index = json.loads((repo.tmp_dir / "cache" / "pkgcache-index.json").read_text())
    assert index["files"] == {}, "a file changed just now must not enter the stat cache"

    monkeypatch.setattr(pkgindex, "RACY_NS", -(10 ** 12))
    hashed: list[Path] = []
    real_hash = pkgindex.file_sha256
    monkeypatch.setattr(pkgindex, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    first = import_package(repo, a)
    assert hashed == [a] and first.skipped
    hashed.clear()
    assert import_package(repo, a).skipped and hashed == []

    st = a.stat()
    a.write_bytes(b.read_bytes())
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    rewritten = import_package(repo, a)
    assert hashed == [a] and not rewritten.skipped and rewritten.commit != first.commit


def test_cache_ref_uses_epoch_and_arch() -> None:
    from importers.model import PackageType
    meta = PackageMeta(type=PackageType.RPM, name="lib_x", epoch=2, version="1.0+dfsg",
                       release="1", arch="x86_64")
    assert cache_ref(meta) == "strata/pkg/lib__x/2_3A1.0_2Bdfsg-1.x86__64"


@pytest.mark.slow
def test_large_package_imports_in_bounded_memory(tmp_path: Path) -> None:
    """A 512 MiB payload imports with a resident set far below its size."""
    size = 512 << 20
    data = tmp_path / "big.tar.gz"
    with tarfile.open(data, "w:gz", compresslevel=1) as tf:
        ti = tarfile.TarInfo("./usr/share/big/blob")
        ti.size = size
        with open("/dev/zero", "rb") as zero:
            tf.addfile(ti, zero)
    deb = hand_deb(tmp_path, "big", [], data_name="data.tar.gz", data_bytes=data.read_bytes(),
                   control_extra=f"Installed-Size: {size // 1024 + 4}\n")
    data.unlink()
    code = (  # VmHWM: peak RSS of this image (ru_maxrss would count the forking parent)
        "import re, sys\n"
        "from pathlib import Path\n"
        "from store.repo import Repo\n"
        "from importers.pkgcache import import_package\n"
        "r = import_package(Repo.init(Path(sys.argv[2])), Path(sys.argv[1]))\n"
        "status = open('/proc/self/status').read()\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(deb), str(tmp_path / "repo")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    maxrss_kib = int(proc.stdout.strip())
    assert maxrss_kib < 120 * 1024, f"peak RSS {maxrss_kib} KiB for a {size >> 20} MiB payload"
    blob = next((tmp_path / "repo" / "objects").rglob("*.file"))
    assert os.path.getsize(blob) == size


@pytest.mark.parametrize("mode", ["bare", "bare-user", "archive-z2"])
def test_import_into_every_repo_mode_passes_ostree_fsck(tmp_path: Path, two_packages: list[Path],
                                                         mode: str) -> None:
    require_tool("ostree")
    from store.repo import RepoMode
    repo = Repo.init(tmp_path / "repo", RepoMode(mode))
    results = import_packages(repo, two_packages)
    run(["ostree", f"--repo={repo.path}", "fsck"])
    for r in results:
        listing = run(["ostree", f"--repo={repo.path}", "ls", "-R", r.ref]).stdout
        assert "/usr/bin/" in listing


def test_same_file_twice_and_conflicting_files(tmp_path: Path, repo: Repo,
                                               two_packages: list[Path]) -> None:
    deb = two_packages[0]
    twice = import_packages(repo, [deb, deb])
    assert twice[0].ref == twice[1].ref and twice[0].commit == twice[1].commit
    (tmp_path / "other").mkdir()
    other = build_deb(tmp_path / "other", "alpha", "1.0-1", files={"usr/bin/alpha": b"v2\n"})
    repo2 = Repo.init(tmp_path / "repo2")
    with pytest.raises(PackageFormatError, match="different files for the same package"):
        import_packages(repo2, [deb, other])
    assert repo2.list_refs() == {}


def test_two_process_unpack_equals_one_process(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The same commits, objects and records whether packages unpack here alone or in this
    process and a forked one taking turns; the real ostree finds the repository sound."""
    import importers.pkgcache as pkgcache

    debs = [build_deb(tmp_path / f"d{i}", f"pkg{i}", f"1.{i}",
                      files={f"usr/share/pkg{i}/{j}": os.urandom(3000 * i) for j in range(i + 2)},
                      symlinks={f"usr/bin/pkg{i}": f"../share/pkg{i}/0"}) for i in range(6)]
    results = {}
    for workers in (2, 1):
        monkeypatch.setattr(pkgcache, "UNPACK_PROCESSES", workers)
        repo = Repo.init(tmp_path / f"repo{workers}")
        got = pkgcache.import_packages(repo, debs)
        results[workers] = ([(r.ref, r.commit, r.meta) for r in got], repo.list_refs(),
                            sorted(repo.iter_objects()))
    assert results[2] == results[1]
    require_tool("ostree")
    run(["ostree", "fsck", f"--repo={tmp_path / 'repo2'}"])
