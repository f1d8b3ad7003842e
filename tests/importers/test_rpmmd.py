"""rpm-md repositories: .repo parsing, a real createrepo_c repository over loopback HTTP."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from pathlib import Path

import pytest
import zstandard

from importers.errors import (
    ChecksumMismatch,
    FetchError,
    RepoMetadataError,
    SourceSignatureError,
)
from importers.fetch import Fetcher
from importers.model import DepKind, Op
from importers.pkgcache import import_package
from importers.rpmmd import (
    RpmRepo,
    download_rpm,
    load_catalogue,
    parse_repo_file,
    parse_source_spec,
)
from store.repo import Repo
from tests.importers.builders import build_rpm
from tests.importers.conftest import serve
from tests.util import gpg_keypair, require_tool, run


def test_repo_file() -> None:
    text = ("[fedora]\nname=Fedora $releasever\nbaseurl=http://h/$releasever/$basearch/\n"
            "enabled=1\ngpgcheck=1\ngpgkey=file:///etc/pki/k\nmetalink=http://m\n\n"
            "[off]\nbaseurl=http://x\nenabled=0\n")
    fedora, off = parse_repo_file(text, basearch="aarch64", releasever="40")
    assert fedora == RpmRepo("fedora", ("http://h/40/aarch64",), "Fedora 40", True, True,
                             ("file:///etc/pki/k",))
    assert not off.enabled
    assert parse_source_spec("rpm-md http://h/repo/").baseurls == ("http://h/repo",)


@pytest.fixture(scope="module")
def rpm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("rpmbuild", "createrepo_c")
    d = tmp_path_factory.mktemp("rpmmd")
    build_rpm(d, "tool", version="3.0", release="2", extra="Requires: libtool >= 1.5\n"
              "Requires(pre): /bin/sh\nProvides: tooling\nRecommends: docs\n",
              install="mkdir -p %{buildroot}/usr/bin %{buildroot}/usr/share/tool\n"
              "echo t > %{buildroot}/usr/bin/tool\necho d > %{buildroot}/usr/share/tool/d\n",
              files="/usr/bin/tool\n/usr/share/tool")
    build_rpm(d, "libtool", version="1.6", release="1", extra="Epoch: 3\n",
              install="mkdir -p %{buildroot}/usr/lib\necho l > %{buildroot}/usr/lib/libtool.so\n",
              files="/usr/lib/libtool.so")
    out = d / "rpms"
    out.mkdir()
    for rpm in d.rglob("*.noarch.rpm"):
        shutil.copy(rpm, out)
    return out


def _repo(rpm_dir: Path, tmp_path: Path, compress: str) -> Path:
    root = tmp_path / f"repo-{compress}"
    shutil.copytree(rpm_dir, root)
    if compress == "zstd":
        run(["createrepo_c", "-q", "--general-compress-type", "gz", root])
        _recompress_primary_zstd(root)
    else:
        run(["createrepo_c", "-q", "--general-compress-type", compress, root])
    return root


def _recompress_primary_zstd(root: Path) -> None:
    """createrepo_c 0.17 cannot write zstd: recompress primary and fix repomd.xml by hand."""
    old = next((root / "repodata").glob("*-primary.xml.gz"))
    data = zstandard.ZstdCompressor().compress(gzip.decompress(old.read_bytes()))
    digest = hashlib.sha256(data).hexdigest()
    new = root / "repodata" / f"{digest}-primary.xml.zst"
    new.write_bytes(data)
    old_digest = old.name.split("-")[0]
    repomd = root / "repodata" / "repomd.xml"
    text = repomd.read_text().replace(old.name, new.name).replace(
        f'<checksum type="sha256">{old_digest}', f'<checksum type="sha256">{digest}')
    text = re.sub(r'(primary.xml.zst"/>\s*<timestamp>\d+</timestamp>\s*<size>)\d+',
                  lambda m: f"{m.group(1)}{len(data)}", text)
    repomd.write_text(text)
    old.unlink()


@pytest.mark.parametrize("compress", ["gz", "xz", "zstd"])
def test_createrepo_repository_over_http(rpm_dir: Path, tmp_path: Path, compress: str) -> None:
    root = _repo(rpm_dir, tmp_path, compress)
    with serve(root) as (url, _log):
        fetcher = Fetcher(tmp_path / "cache")
        cat = {m.name: m for m in load_catalogue(parse_source_spec(f"rpm-md {url}"), fetcher)}
        assert set(cat) == {"tool", "libtool"}
        tool = cat["tool"]
        assert tool.evr == "3.0-2" and cat["libtool"].evr == "3:1.6-1"
        req = {g[0].name: g[0] for g in tool.relations(DepKind.DEPENDS)}
        assert req["libtool"].op == Op.GE and req["libtool"].version == "1.5"
        assert req["/bin/sh"].flags == 64
        assert [g[0].name for g in tool.relations(DepKind.RECOMMENDS)] == ["docs"]
        assert "usr/bin/tool" in {f.path for f in tool.files}
        repo = Repo.init(tmp_path / "repo")
        assert import_package(repo, download_rpm(tool, fetcher)).ref == \
            "strata/pkg/tool/3.0-2.noarch"


def test_filelists_give_complete_file_lists(rpm_dir: Path, tmp_path: Path) -> None:
    root = _repo(rpm_dir, tmp_path, "gz")
    with serve(root) as (url, _log):
        src = parse_source_spec(f"rpm-md {url}")
        cat = {m.name: m for m in load_catalogue(src, Fetcher(tmp_path / "c"), filelists=True)}
    assert {f.path for f in cat["tool"].files} >= {"usr/bin/tool", "usr/share/tool",
                                                   "usr/share/tool/d"}


def test_primary_not_matching_repomd_is_refused(rpm_dir: Path, tmp_path: Path) -> None:
    root = _repo(rpm_dir, tmp_path, "gz")
    primary = next((root / "repodata").glob("*-primary.xml.gz"))
    data = bytearray(primary.read_bytes())
    data[-12] ^= 0xFF
    primary.write_bytes(bytes(data))
    with serve(root) as (url, _log):
        with pytest.raises(ChecksumMismatch, match="primary.xml.gz: sha256 does not match"):
            load_catalogue(parse_source_spec(f"rpm-md {url}"), Fetcher(tmp_path / "c"))


def test_tampered_rpm_download_is_refused(rpm_dir: Path, tmp_path: Path) -> None:
    root = _repo(rpm_dir, tmp_path, "gz")
    with serve(root) as (url, _log):
        fetcher = Fetcher(tmp_path / "c")
        tool = next(m for m in load_catalogue(parse_source_spec(f"rpm-md {url}"), fetcher)
                    if m.name == "tool")
        rpm = root / tool.location.removeprefix(url + "/")
        data = bytearray(rpm.read_bytes())
        data[-1] ^= 0xFF
        rpm.write_bytes(bytes(data))
        with pytest.raises(ChecksumMismatch, match="tool-3.0-2.noarch.rpm"):
            download_rpm(tool, fetcher)


def test_cached_catalogue_and_packages_work_offline(rpm_dir: Path, tmp_path: Path) -> None:
    root = _repo(rpm_dir, tmp_path, "xz")
    cache = tmp_path / "cache"
    with serve(root) as (url, log):
        src = parse_source_spec(f"rpm-md {url}")
        first = load_catalogue(src, Fetcher(cache))
        paths = [download_rpm(m, Fetcher(cache)) for m in first]
        log.clear()
        load_catalogue(src, Fetcher(cache))
        assert ("/repodata/repomd.xml", 304) in log
        assert all(not p.endswith(".rpm") for p, _ in log)
    offline = Fetcher(cache, offline=True)
    assert load_catalogue(src, offline) == first
    assert [download_rpm(m, offline) for m in first] == paths
    with pytest.raises(FetchError):
        load_catalogue(src, Fetcher(tmp_path / "nothing", offline=True))


def test_primary_expanding_beyond_open_size_is_refused(rpm_dir: Path, tmp_path: Path) -> None:
    root = _repo(rpm_dir, tmp_path, "gz")
    repomd = root / "repodata" / "repomd.xml"
    text = repomd.read_text()
    text = re.sub(r'(primary.xml.gz"/>\s*<timestamp>\d+</timestamp>\s*<size>\d+</size>\s*'
                  r'<open-size>)\d+', lambda m: f"{m.group(1)}100", text)
    repomd.write_text(text)
    with pytest.raises(RepoMetadataError, match="expands beyond its declared size"):
        load_catalogue(parse_source_spec(f"rpm-md file://{root}"), Fetcher(tmp_path / "c"))


def test_gpgcheck_requires_a_valid_signature(rpm_dir: Path, tmp_path: Path) -> None:
    require_tool("rpmsign", "rpmkeys", "gpg")
    root = tmp_path / "signed"
    shutil.copytree(rpm_dir, root)
    home, key = gpg_keypair(tmp_path, "packager", "rsa2048", armor=True)
    _other, other_key = gpg_keypair(tmp_path, "stranger", "rsa2048", armor=True)
    tool = next(root.glob("tool-*.rpm"))
    run(["rpmsign", "--define", f"_gpg_path {home}", "--define", "_gpg_name packager",
         "--define", f"__gpg {shutil.which('gpg')}",
         "--addsign", tool])
    run(["createrepo_c", "-q", root])
    fetcher = Fetcher(tmp_path / "cache")
    good = RpmRepo("signed", (f"file://{root}",), gpgcheck=True, gpgkeys=(f"file://{key}",))
    cat = {m.name: m for m in load_catalogue(good, fetcher)}
    assert download_rpm(cat["tool"], fetcher, repo=good).name == tool.name
    with pytest.raises(SourceSignatureError, match="libtool-3:1.6-1.noarch.rpm"):
        download_rpm(cat["libtool"], fetcher, repo=good)
    wrong = RpmRepo("signed", (f"file://{root}",), gpgcheck=True,
                    gpgkeys=(f"file://{other_key}",))
    with pytest.raises(SourceSignatureError, match="signature does not verify"):
        download_rpm(cat["tool"], fetcher, repo=wrong)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("rpmkeys-")]


def test_repo_gpgcheck_verifies_repomd_signature(rpm_dir: Path, tmp_path: Path) -> None:
    require_tool("gpg", "gpgv")
    root = _repo(rpm_dir, tmp_path, "gz")
    home, key = gpg_keypair(tmp_path, "repo", "rsa2048", armor=True)
    _other, other_key = gpg_keypair(tmp_path, "stranger", "rsa2048", armor=True)
    repomd = root / "repodata" / "repomd.xml"
    run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
         "--armor", "--detach-sign", "--output", f"{repomd}.asc", repomd])
    text = (f"[r]\nbaseurl=file://{root}\nrepo_gpgcheck=1\ngpgkey=file://{key}\n\n"
            f"[bad]\nbaseurl=file://{root}\nrepo_gpgcheck=1\ngpgkey=file://{other_key}\n")
    good, bad = parse_repo_file(text)
    assert len(load_catalogue(good, Fetcher(tmp_path / "c1"))) == 2
    with pytest.raises(SourceSignatureError, match="repomd.xml does not verify"):
        load_catalogue(bad, Fetcher(tmp_path / "c2"))
