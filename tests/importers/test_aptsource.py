"""apt sources: parsing, a real apt-ftparchive repository over loopback HTTP, gpgv checks."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
from base64 import b64encode
from pathlib import Path

import pytest

from importers.aptsource import (
    AptSource,
    download_deb,
    load_catalogue,
    parse_sources,
    strip_clearsign,
)
from importers.errors import (
    ChecksumMismatch,
    FetchError,
    RepoMetadataError,
    SourceSignatureError,
)
from importers.fetch import Fetcher
from importers.model import DepKind
from importers.pkgcache import import_package
from store.repo import Repo
from tests.importers.builders import build_deb
from tests.importers.conftest import serve
from tests.util import gpg, gpg_keypair, require_tool, run


def test_one_line_sources() -> None:
    text = ("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://h/debian bookworm main contrib\n"
            "deb-src http://h/debian bookworm main\n"
            "deb [trusted=yes] file:///srv/repo ./\n")
    a, b = parse_sources(text)
    assert a == AptSource("http://h/debian", "bookworm", ("main", "contrib"), ("amd64",),
                          "/k.gpg", False)
    assert b.trusted and b.flat and b.uri == "file:///srv/repo"


def test_deb822_sources() -> None:
    text = ("Types: deb deb-src\nURIs: http://a/debian http://b/debian\nSuites: bookworm "
            "bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
            "Types: deb\nURIs: http://c\nSuites: x\nComponents: main\nEnabled: no\n")
    sources = parse_sources(text)
    assert len(sources) == 4
    assert {s.uri for s in sources} == {"http://a/debian", "http://b/debian"}
    assert all(s.signed_by == "/usr/share/keyrings/k.gpg" for s in sources)


@pytest.fixture(scope="module")
def apt_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A signed apt repository made by apt-ftparchive, with two packages."""
    require_tool("apt-ftparchive", "dpkg-deb", "gpg", "gpgv")
    base = tmp_path_factory.mktemp("aptrepo")
    root = base / "repo"
    pool = root / "pool" / "main"
    pool.mkdir(parents=True)
    build_deb(pool, "cowsay-lite", "1.0-1", files={"usr/bin/cowsay-lite": b"moo\n"},
              control="Depends: perl-base | busybox\n", arch="amd64")
    build_deb(pool, "fortune-lite", "2:0.5-2", files={"usr/share/fortune/x": b"x\n"})
    for d in pool.iterdir():
        if d.is_dir():
            shutil.rmtree(d)
    idx = root / "dists" / "stable" / "main" / "binary-amd64"
    idx.mkdir(parents=True)
    packages = run(["apt-ftparchive", "packages", "pool"], cwd=root).stdout.encode()
    (idx / "Packages").write_bytes(packages)
    (idx / "Packages.xz").write_bytes(lzma.compress(packages))
    (idx / "Packages.gz").write_bytes(gzip.compress(packages))
    dist = root / "dists" / "stable"
    release = run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=stable",
                   "-o", "APT::FTPArchive::Release::Components=main",
                   "-o", "APT::FTPArchive::Release::Architectures=amd64", "release", dist]).stdout
    (dist / "Release").write_text(release)
    home, key = gpg_keypair(base, "repo")
    gpg(home, "--clearsign", "--output", dist / "InRelease", dist / "Release")
    gpg(home, "--detach-sign", "--output", dist / "Release.gpg", dist / "Release")
    _other_home, other_key = gpg_keypair(base, "other")
    return {"root": root, "key": key, "other_key": other_key}


def _copy(apt_repo: dict[str, Path], tmp_path: Path) -> Path:
    dst = tmp_path / "served"
    shutil.copytree(apt_repo["root"], dst)
    return dst


def test_signed_repository_over_http(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    with serve(apt_repo["root"]) as (url, log):
        src = parse_sources(f"deb [signed-by={apt_repo['key']}] {url} stable main\n")[0]
        fetcher = Fetcher(tmp_path / "cache")
        cat = {m.name: m for m in load_catalogue(src, fetcher, arch="amd64")}
        assert set(cat) == {"cowsay-lite", "fortune-lite"}
        cow = cat["cowsay-lite"]
        assert cow.evr == "1.0-1" and cow.location.startswith(f"{url}/pool/main/")
        assert [r.name for r in cow.relations(DepKind.DEPENDS)[0]] == ["perl-base", "busybox"]
        assert cat["fortune-lite"].epoch == 2 and len(cow.checksum) == 64
        assert ("/dists/stable/InRelease", 200) in log
        assert ("/dists/stable/main/binary-amd64/Packages.xz", 200) in log
        deb = download_deb(cow, fetcher)
        repo = Repo.init(tmp_path / "repo")
        assert import_package(repo, deb).ref == "strata/pkg/cowsay-lite/1.0-1.amd64"


def test_detached_release_signature(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(apt_repo, tmp_path)
    (root / "dists/stable/InRelease").unlink()
    with serve(root) as (url, _log):
        src = AptSource(url, "stable", ("main",), signed_by=str(apt_repo["key"]))
        assert len(load_catalogue(src, Fetcher(tmp_path / "cache"), arch="amd64")) == 2


def test_deb822_inline_signed_by(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    body = b64encode(apt_repo["key"].read_bytes()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    block = "\n ".join(["-----BEGIN PGP PUBLIC KEY BLOCK-----", ".", *lines,
                        "-----END PGP PUBLIC KEY BLOCK-----"])
    with serve(apt_repo["root"]) as (url, _log):
        text = f"Types: deb\nURIs: {url}\nSuites: stable\nComponents: main\nSigned-By:\n {block}\n"
        src = parse_sources(text)[0]
        assert len(load_catalogue(src, Fetcher(tmp_path / "cache"), arch="amd64")) == 2


def test_wrong_key_is_refused(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    with serve(apt_repo["root"]) as (url, _log):
        src = AptSource(url, "stable", ("main",), signed_by=str(apt_repo["other_key"]))
        with pytest.raises(SourceSignatureError, match="InRelease does not verify"):
            load_catalogue(src, Fetcher(tmp_path / "cache"), arch="amd64")


def test_trusted_yes_needs_no_signature(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(apt_repo, tmp_path)
    for name in ("InRelease", "Release.gpg"):
        (root / "dists/stable" / name).unlink()
    with serve(root) as (url, _log):
        trusted = AptSource(url, "stable", ("main",), trusted=True)
        assert len(load_catalogue(trusted, Fetcher(tmp_path / "c1"), arch="amd64")) == 2
        untrusted = AptSource(url, "stable", ("main",), signed_by=str(apt_repo["key"]))
        with pytest.raises(FetchError, match="Release.gpg"):
            load_catalogue(untrusted, Fetcher(tmp_path / "c2"), arch="amd64")


def test_index_hash_not_matching_release_is_refused(apt_repo: dict[str, Path],
                                                    tmp_path: Path) -> None:
    root = _copy(apt_repo, tmp_path)
    xz = root / "dists/stable/main/binary-amd64/Packages.xz"
    text = lzma.decompress(xz.read_bytes()).replace(b"cowsay-lite", b"cowsay-evil")
    xz.write_bytes(lzma.compress(text))
    with serve(root) as (url, _log):
        src = AptSource(url, "stable", ("main",), signed_by=str(apt_repo["key"]))
        fetcher = Fetcher(tmp_path / "cache")
        with pytest.raises(ChecksumMismatch, match="Packages.xz: sha256 does not match"):
            load_catalogue(src, fetcher, arch="amd64")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size
                == xz.stat().st_size]


def test_tampered_deb_download_is_refused(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(apt_repo, tmp_path)
    with serve(root) as (url, _log):
        src = AptSource(url, "stable", ("main",), signed_by=str(apt_repo["key"]))
        fetcher = Fetcher(tmp_path / "cache")
        cow = next(m for m in load_catalogue(src, fetcher, arch="amd64")
                   if m.name == "cowsay-lite")
        deb = root / cow.location.removeprefix(url + "/")
        data = bytearray(deb.read_bytes())
        data[-10] ^= 1
        deb.write_bytes(bytes(data))
        with pytest.raises(ChecksumMismatch, match="cowsay-lite_1.0-1_amd64.deb"):
            download_deb(cow, fetcher)


def test_revalidation_and_offline_use(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    with serve(apt_repo["root"]) as (url, log):
        src = AptSource(url, "stable", ("main",), signed_by=str(apt_repo["key"]))
        cache = tmp_path / "cache"
        first = load_catalogue(src, Fetcher(cache), arch="amd64")
        log.clear()
        assert load_catalogue(src, Fetcher(cache), arch="amd64") == first
        assert ("/dists/stable/InRelease", 304) in log
        assert not any(p.endswith("Packages.xz") for p, _ in log)
    assert load_catalogue(src, Fetcher(cache, offline=True), arch="amd64") == first
    with pytest.raises(FetchError, match="network is off"):
        load_catalogue(src, Fetcher(tmp_path / "empty", offline=True), arch="amd64")


def test_flat_file_repository(apt_repo: dict[str, Path], tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for deb in (apt_repo["root"] / "pool/main").glob("*.deb"):
        shutil.copy(deb, flat)
    (flat / "Packages").write_text(run(["apt-ftparchive", "packages", "."], cwd=flat).stdout)
    (flat / "Release").write_text(run(["apt-ftparchive", "release", "."], cwd=flat).stdout)
    src = parse_sources(f"deb [trusted=yes] file://{flat} ./\n")[0]
    cat = load_catalogue(src, Fetcher(tmp_path / "cache", offline=True), arch="amd64")
    assert sorted(m.name for m in cat) == ["cowsay-lite", "fortune-lite"]
    assert all(os.path.exists(download_deb(m, Fetcher(tmp_path / "c", offline=True)))
               for m in cat)


def test_strip_clearsign() -> None:
    text = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: x\n- -dash\n"
            "-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n")
    assert strip_clearsign(text) == "Origin: x\n-dash\n"


def test_index_expanding_beyond_release_size_is_refused(tmp_path: Path) -> None:
    import hashlib
    flat = tmp_path / "bomb"
    flat.mkdir()
    small = b"Package: a\nVersion: 1\nArchitecture: all\n\n"
    bomb = lzma.compress(small + b"\n" * (20 << 20))
    (flat / "Packages.xz").write_bytes(bomb)
    (flat / "Release").write_text(
        "Origin: t\nSHA256:\n"
        f" {hashlib.sha256(small).hexdigest()} {len(small)} Packages\n"
        f" {hashlib.sha256(bomb).hexdigest()} {len(bomb)} Packages.xz\n")
    src = parse_sources(f"deb [trusted=yes] file://{flat} ./\n")[0]
    with pytest.raises(RepoMetadataError, match="Packages.xz expands beyond its declared size"):
        load_catalogue(src, Fetcher(tmp_path / "cache"), arch="amd64")
