"""rpm-md (yum/dnf) repositories: ``.repo`` files, repomd.xml, primary and filelists.

For each enabled repository::

    BASEURL/repodata/repomd.xml          which files exist, their checksums and sizes
    BASEURL/<primary location>           .gz/.xz/.zst/.bz2; checked, then parsed as a stream
    BASEURL/<filelists location>         only when file dependencies need it

Each ``<package>`` becomes a catalogue :class:`PackageMeta` whose ``location`` is
the .rpm's absolute URL and ``checksum`` the checksum primary declares.
"""

from __future__ import annotations

import bz2
import configparser
import gzip
import io
import lzma
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, cast

import zstandard

from importers.errors import ChecksumMismatch, RepoMetadataError, SourceSignatureError
from importers.fetch import Expected, Fetcher
from importers.gpg import binary_keyrings, gpgv
from importers.model import (
    CNF,
    DepKind,
    FileEntry,
    FileKind,
    Op,
    Origin,
    PackageMeta,
    PackageType,
    Relation,
)
from store.errors import CommandError
from store.fsutil import scratch_dir
from store.run import run

NS = {"repo": "http://linux.duke.edu/metadata/repo",
      "common": "http://linux.duke.edu/metadata/common",
      "rpm": "http://linux.duke.edu/metadata/rpm",
      "fl": "http://linux.duke.edu/metadata/filelists"}
METADATA_CAP = 4 << 30
REPOMD_CAP = 16 << 20  # repomd.xml and its signature
PART_CAP = 1 << 30  # a metadata file repomd.xml gives no size for
_FLAGS = {"EQ": Op.EQ, "LT": Op.LT, "LE": Op.LE, "GT": Op.GT, "GE": Op.GE}
_DEPS = {"requires": DepKind.DEPENDS, "provides": DepKind.PROVIDES,
         "conflicts": DepKind.CONFLICTS, "obsoletes": DepKind.OBSOLETES,
         "recommends": DepKind.RECOMMENDS, "suggests": DepKind.SUGGESTS,
         "supplements": DepKind.SUPPLEMENTS, "enhances": DepKind.ENHANCES}


@dataclass(frozen=True)
class RpmRepo:
    """One repository section of a ``.repo`` file (or an ``rpm-md URL`` source)."""

    id: str
    baseurls: tuple[str, ...]
    name: str = ""
    enabled: bool = True
    gpgcheck: bool = False
    gpgkeys: tuple[str, ...] = ()
    repo_gpgcheck: bool = False


@dataclass(frozen=True)
class RepoFile:
    """A repomd.xml entry: where a metadata file is and what it must hash to."""

    type: str
    href: str
    checksum: Expected
    open_size: int | None = None


def parse_repo_file(text: str, *, basearch: str = "x86_64",
                    releasever: str = "") -> list[RpmRepo]:
    """Sections of a yum/dnf ``.repo`` file, ``$basearch``/``$releasever`` substituted."""
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        cp.read_string(text)
    except configparser.Error as e:
        raise RepoMetadataError(f"cannot parse .repo file: {e}") from e

    def sub(v: str) -> str:
        return v.replace("$basearch", basearch).replace("$releasever", releasever) \
            .replace("$arch", basearch)

    out = []
    for sect in cp.sections():
        s = cp[sect]
        urls = tuple(sub(u).rstrip("/") for u in s.get("baseurl", "").replace(",", " ").split())
        out.append(RpmRepo(id=sect, baseurls=urls, name=sub(s.get("name", sect)),
                           enabled=s.get("enabled", "1").strip() in ("1", "true", "yes"),
                           gpgcheck=s.get("gpgcheck", "0").strip() in ("1", "true", "yes"),
                           gpgkeys=tuple(sub(k) for k in s.get("gpgkey", "").split()),
                           repo_gpgcheck=s.get("repo_gpgcheck", "0").strip() in
                           ("1", "true", "yes")))
    return out


def parse_source_spec(spec: str) -> RpmRepo:
    """``rpm-md URL`` (the CLI's --source form) as a repository."""
    kind, _, url = spec.strip().partition(" ")
    if kind != "rpm-md" or not url.strip():
        raise RepoMetadataError(f"not an rpm-md source: {spec!r}")
    return RpmRepo(id=url.strip(), baseurls=(url.strip().rstrip("/"),))


def parse_repomd(data: bytes, label: str) -> dict[str, RepoFile]:
    """repomd.xml: data type -> location and checksum."""
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, LookupError) as e:  # LookupError: an unknown encoding
        raise RepoMetadataError(f"{label}: {e}") from e
    out = {}
    for d in root.findall("repo:data", NS):
        csum, loc, size = (d.find("repo:checksum", NS), d.find("repo:location", NS),
                           d.find("repo:size", NS))
        open_size = d.findtext("repo:open-size", "", NS)
        if csum is None or loc is None or not csum.text:
            raise RepoMetadataError(f"{label}: entry '{d.get('type')}' lacks checksum/location")
        algo = {"sha": "sha1"}.get(csum.get("type", "sha256"), csum.get("type", "sha256"))
        out[d.get("type", "")] = RepoFile(
            d.get("type", ""), loc.get("href", ""),
            Expected(algo, csum.text.strip(), _int(size.text, label) if size is not None and
                     size.text else None), _int(open_size, label) if open_size else None)
    return out


def _int(text: str | None, where: str) -> int:
    """A decimal number of repository metadata; RepoMetadataError for anything else."""
    t = (text or "").strip()
    if not (t.isascii() and t.isdigit() and len(t) <= 20):
        raise RepoMetadataError(f"{where}: {t[:40]!r} is not a number")
    return int(t)


def open_compressed(path: Path, url: str) -> IO[bytes]:
    """A decompressing reader chosen by the file's suffix in the URL."""
    if url.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))  # typeshed: GzipFile is no IO[bytes]
    if url.endswith(".xz"):
        return lzma.open(path, "rb")
    if url.endswith(".bz2"):
        return bz2.open(path, "rb")
    if url.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


class _Capped(io.RawIOBase):
    """Raises once more than ``limit`` decompressed bytes were read (metadata bombs)."""

    def __init__(self, inner: IO[bytes], limit: int, url: str) -> None:
        self._inner, self._left, self._url = inner, limit, url

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(memoryview(b).nbytes)
        self._left -= len(data)
        if self._left < 0:
            raise RepoMetadataError(f"{self._url} expands beyond its declared size")
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)


def _iter_elements(path: Path, url: str, tag: str, limit: int) -> Iterator[ET.Element]:
    try:
        with open_compressed(path, url) as raw:
            f = io.BufferedReader(_Capped(raw, limit, url), 1 << 16)
            for _event, elem in ET.iterparse(f, events=("end",)):
                if elem.tag == tag:
                    yield elem
                    elem.clear()
    except (ET.ParseError, LookupError, OSError, EOFError, lzma.LZMAError,
            zstandard.ZstdError) as e:
        raise ChecksumMismatch(f"{url}: corrupt metadata: {e}") from e


def _relations(fmt: ET.Element | None) -> dict[DepKind, CNF]:
    out: dict[DepKind, CNF] = {}
    if fmt is None:
        return out
    for key, kind in _DEPS.items():
        node = fmt.find(f"rpm:{key}", NS)
        if node is None:
            continue
        out[kind] = tuple((_entry_relation(e),) for e in node.findall("rpm:entry", NS))
    return out


def _entry_relation(e: ET.Element) -> Relation:
    op = _FLAGS.get(e.get("flags", ""))
    version = ""
    if op is not None:
        epoch, ver, rel = e.get("epoch", "0"), e.get("ver", ""), e.get("rel")
        version = (f"{epoch}:" if epoch not in ("0", "") else "") + ver + (f"-{rel}" if rel else "")
    return Relation(e.get("name", ""), op, version, flags=64 if e.get("pre") == "1" else 0)


def _package(p: ET.Element, base: str) -> PackageMeta:
    v = p.find("common:version", NS)
    csum = p.find("common:checksum", NS)
    loc = p.find("common:location", NS)
    size = p.find("common:size", NS)
    fmt = p.find("common:format", NS)
    where = f"primary entry {p.findtext('common:name', '', NS)[:80]}"
    if v is None or csum is None or loc is None:
        raise RepoMetadataError(f"{where} incomplete")
    files = tuple(FileEntry(path=(f.text or "").lstrip("/"),
                            kind=FileKind.DIR if f.get("type") == "dir" else FileKind.FILE)
                  for f in (fmt.findall("common:file", NS) if fmt is not None else ()))
    return PackageMeta(
        type=PackageType.RPM, name=p.findtext("common:name", "", NS), version=v.get("ver", ""),
        release=v.get("rel", ""), epoch=_int(v.get("epoch") or "0", where),
        arch=p.findtext("common:arch", "", NS), origin=Origin.CATALOGUE, deps=_relations(fmt),
        files=files, checksum=(csum.text or "").strip(),
        checksum_type={"sha": "sha1"}.get(csum.get("type", "sha256"), csum.get("type", "sha256")),
        size=_int(size.get("package", "0"), where) if size is not None else 0,
        installed_size=_int(size.get("installed", "0"), where) if size is not None else 0,
        location=f"{base}/{loc.get('href', '')}", summary=p.findtext("common:summary", "", NS),
        source=fmt.findtext("rpm:sourcerpm", "", NS) if fmt is not None else "")


def _fetch_part(repo: RpmRepo, fetcher: Fetcher, files: dict[str, RepoFile], kind: str,
                base: str) -> tuple[Path, str, int]:
    if kind not in files:
        raise RepoMetadataError(f"{base}/repodata/repomd.xml lists no {kind} metadata")
    entry = files[kind]
    url = f"{base}/{entry.href}"
    limit = entry.open_size if entry.open_size else METADATA_CAP
    path = fetcher.fetch(url, expected=entry.checksum, label=url, limit=PART_CAP)
    return path, url, limit


def load_catalogue(repo: RpmRepo, fetcher: Fetcher, *, filelists: bool = False
                   ) -> list[PackageMeta]:
    """Every package of an enabled repository; ``filelists`` adds complete file lists."""
    if not repo.enabled or not repo.baseurls:
        return []
    base = repo.baseurls[0]
    files = parse_repomd(fetch_repomd(repo, fetcher), f"{base}/repodata/repomd.xml")
    path, url, limit = _fetch_part(repo, fetcher, files, "primary", base)
    tag = f"{{{NS['common']}}}package"
    pkgs = [_package(p, base) for p in _iter_elements(path, url, tag, limit)]
    if filelists:
        pkgs = _add_filelists(pkgs, *_fetch_part(repo, fetcher, files, "filelists", base))
    return pkgs


def fetch_repomd(repo: RpmRepo, fetcher: Fetcher) -> bytes:
    """The repository's repomd.xml (a conditional GET when cached), its signature verified
    when ``repo_gpgcheck`` is set; the repository must be enabled and have a baseurl.
    Once per ``fetcher`` (later calls return the same bytes, see ``Fetcher.snapshot``)."""
    key = f"repomd {repo!r}"
    if key in fetcher.snapshot:
        return fetcher.snapshot[key]
    base = repo.baseurls[0]
    repomd = fetcher.fetch_bytes(f"{base}/repodata/repomd.xml",
                                 label=f"{base}/repodata/repomd.xml", limit=REPOMD_CAP)
    if repo.repo_gpgcheck:
        _verify_repomd(repo, fetcher, repomd, base)
    fetcher.snapshot[key] = repomd
    return repomd


def _add_filelists(pkgs: list[PackageMeta], path: Path, url: str,
                   limit: int) -> list[PackageMeta]:
    by_id = {p.checksum: i for i, p in enumerate(pkgs)}
    out = list(pkgs)
    for p in _iter_elements(path, url, f"{{{NS['fl']}}}package", limit):
        i = by_id.get(p.get("pkgid", ""))
        if i is None:
            continue
        files = tuple(FileEntry(path=(f.text or "").lstrip("/"),
                                kind=FileKind.DIR if f.get("type") == "dir" else FileKind.FILE)
                      for f in p.findall("fl:file", NS))
        out[i] = replace(out[i], files=files)
    return out


def download_rpm(meta: PackageMeta, fetcher: Fetcher, *, repo: RpmRepo | None = None) -> Path:
    """The .rpm of a catalogue entry, checked against the checksum primary declares and,
    when ``repo`` has ``gpgcheck``, against its ``gpgkey`` signatures (rpmkeys)."""
    if not meta.location or not meta.checksum:
        raise RepoMetadataError(f"catalogue entry {meta.nevra} has no location or checksum")
    path = fetcher.fetch(meta.location, expected=Expected(meta.checksum_type, meta.checksum,
                                                          meta.size or None),
                         label=f"{meta.nevra}.rpm")
    if repo is not None and repo.gpgcheck:
        verify_rpm_signature(path, _fetch_keys(repo, fetcher), fetcher.root,
                             label=f"{meta.nevra}.rpm")
    return path


def _verify_repomd(repo: RpmRepo, fetcher: Fetcher, repomd: bytes, base: str) -> None:
    url = f"{base}/repodata/repomd.xml"
    sig = fetcher.fetch_bytes(f"{url}.asc", label=f"{url}.asc", limit=REPOMD_CAP)
    keys = _fetch_keys(repo, fetcher)
    with scratch_dir(fetcher.root, "gpgv-") as scratch:
        scratch.chmod(0o700)
        gpgv(repomd, sig, binary_keyrings(keys, scratch), scratch, label=url)


def _fetch_keys(repo: RpmRepo, fetcher: Fetcher) -> list[Path]:
    if not repo.gpgkeys:
        raise SourceSignatureError(f"repository {repo.id} has gpgcheck=1 but no gpgkey")
    return [fetcher.fetch(url, label=f"gpgkey of {repo.id}") for url in repo.gpgkeys]


def verify_rpm_signature(rpm: Path, keys: list[Path], scratch_parent: Path, *,
                         label: str) -> None:
    """Require a valid signature by one of ``keys`` (rpmkeys in a private rpmdb)."""
    with scratch_dir(scratch_parent, "rpmkeys-") as root:
        base: list[str | Path] = ["rpmkeys", "--root", root, "--dbpath", "/rpmdb"]
        try:
            run([*base, "--import", *keys])
            proc = run([*base, "--checksig", rpm], check=False)
        except CommandError as e:
            raise SourceSignatureError(f"cannot check the signature of {label}: {e}") from e
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0 or "signatures OK" not in out:
        raise SourceSignatureError(f"{label}: signature does not verify ({out.strip()})")
