"""apt sources: sources.list / deb822 entries, Release verification, Packages indexes.

For each source, suite and component::

    URI/dists/SUITE/InRelease         (or Release + Release.gpg) verified with gpgv
                                      against Signed-By (or the system keyrings)
                                      unless [trusted=yes]
    URI/dists/SUITE/COMP/binary-ARCH/Packages{.xz,.gz,}
                                      the first variant Release lists; its SHA256
                                      and size checked before it is parsed
    URI/SUITE/Packages...             for flat repositories (SUITE ends in "/")

Each Packages stanza becomes a catalogue :class:`PackageMeta` whose
``location`` is the .deb's absolute URL and ``checksum`` its SHA256.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from debian.deb822 import Deb822

from importers.debcontrol import meta_from_control
from importers.errors import ChecksumMismatch, FetchError, RepoMetadataError, SourceSignatureError
from importers.fetch import Expected, Fetcher
from importers.gpg import binary_keyrings, dearmor, gpgv
from importers.model import Origin, PackageMeta
from store.fsutil import scratch_dir

INDEX_CAP = 1 << 30
RELEASE_CAP = 16 << 20  # InRelease/Release/Release.gpg (Debian's main InRelease is under 1 MB)
STANZA_CAP = 1 << 20
SYSTEM_KEYRINGS = (Path("/etc/apt/trusted.gpg"), Path("/etc/apt/trusted.gpg.d"))
_INDEX_VARIANTS = ("Packages.xz", "Packages.gz", "Packages.bz2", "Packages")


@dataclass(frozen=True)
class AptSource:
    """One source entry (after expanding deb822's multi-value fields)."""

    uri: str
    suite: str
    components: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    signed_by: str = ""
    trusted: bool = False

    @property
    def flat(self) -> bool:
        return self.suite.endswith("/")


def parse_one_line(line: str) -> list[AptSource]:
    """``deb [opt=val ...] URI SUITE [COMPONENT...]``; deb-src and comments give []."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return []
    m = re.match(r"^(\S+)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
    if not m:
        raise RepoMetadataError(f"cannot parse sources line: {line!r}")
    kind, opts, uri, suite, comps = m.groups()
    if kind != "deb":
        return []
    options = dict(o.split("=", 1) for o in (opts or "").split() if "=" in o)
    return [AptSource(uri=uri.rstrip("/"), suite=suite, components=tuple(comps.split()),
                      architectures=tuple(filter(None, options.get("arch", "").split(","))),
                      signed_by=options.get("signed-by", ""),
                      trusted=options.get("trusted", "no") == "yes")]


def parse_deb822(text: str) -> list[AptSource]:
    """Entries of a ``.sources`` file (Types/URIs/Suites/Components/Signed-By/Trusted)."""
    out = []
    for para in Deb822.iter_paragraphs(text):
        if "deb" not in para.get("Types", "").split() or para.get("Enabled", "yes") == "no":
            continue
        signed_by = para.get("Signed-By", "").strip()
        for uri in para.get("URIs", "").split():
            for suite in para.get("Suites", "").split():
                out.append(AptSource(
                    uri=uri.rstrip("/"), suite=suite,
                    components=tuple(para.get("Components", "").split()),
                    architectures=tuple(para.get("Architectures", "").split()),
                    signed_by=signed_by, trusted=para.get("Trusted", "no") == "yes"))
    return out


def parse_sources(text: str, *, deb822: bool | None = None) -> list[AptSource]:
    """A sources.list (one-line) or .sources (deb822) text; the format is detected if not given."""
    if deb822 is None:
        deb822 = bool(re.search(r"^(Types|URIs):", text, re.MULTILINE))
    if deb822:
        return parse_deb822(text)
    return [s for line in text.splitlines() for s in parse_one_line(line)]


def parse_release(text: str, label: str) -> dict[str, tuple[str, int]]:
    """Release's SHA256 list: path -> (sha256, size)."""
    para = Deb822(text)
    if "SHA256" not in para:
        raise RepoMetadataError(f"{label} has no SHA256 list")
    out = {}
    for line in para["SHA256"].strip().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 20):
            raise RepoMetadataError(f"{label}: bad size in SHA256 line {line[:120]!r}")
        out[parts[2]] = (parts[0], int(parts[1]))
    return out


def _keyrings(source: AptSource, scratch: Path) -> list[Path]:
    value = source.signed_by
    if "BEGIN PGP PUBLIC KEY BLOCK" in value:
        text = "\n".join("" if ln.strip() == "." else ln.strip() for ln in value.splitlines())
        key = scratch / "inline.gpg"
        key.write_bytes(dearmor(text))
        return [key]
    paths = [Path(p) for p in value.replace(",", " ").split()] if value else [
        p for d in SYSTEM_KEYRINGS if d.exists()
        for p in ([d] if d.is_file() else sorted(d.glob("*.gpg")) + sorted(d.glob("*.asc")))]
    return binary_keyrings(paths, scratch)


def verify_release(source: AptSource, signed: bytes, detached: bytes | None, label: str,
                   scratch: Path) -> str:
    """The Release text after gpgv verification (or unchanged for trusted sources)."""
    if source.trusted:
        return strip_clearsign(signed.decode("utf-8", "replace"))
    keyrings = _keyrings(source, scratch)
    if not keyrings:
        raise SourceSignatureError(f"no keyring to verify {label} (use Signed-By or trusted=yes)")
    return gpgv(signed, detached, keyrings, scratch, label=label).decode("utf-8", "replace")


def strip_clearsign(text: str) -> str:
    """The signed text of a clearsigned message (unchanged if not clearsigned)."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    body = text.split("\n\n", 1)[1]
    body = body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    return "\n".join(ln[2:] if ln.startswith("- ") else ln for ln in body.splitlines()) + "\n"


def _dist_url(source: AptSource) -> str:
    return f"{source.uri}/{source.suite.rstrip('/')}" if source.flat else \
        f"{source.uri}/dists/{source.suite}"


def fetch_release(source: AptSource, fetcher: Fetcher, scratch: Path) -> str:
    """InRelease (or Release + Release.gpg), verified; each at most RELEASE_CAP bytes."""
    base = _dist_url(source)
    try:
        signed = fetcher.fetch_bytes(f"{base}/InRelease", label=f"{base}/InRelease",
                                     limit=RELEASE_CAP)
        return verify_release(source, signed, None, f"{base}/InRelease", scratch)
    except FetchError:
        pass
    release = fetcher.fetch_bytes(f"{base}/Release", label=f"{base}/Release",
                                  limit=RELEASE_CAP)
    if source.trusted:
        return release.decode("utf-8", "replace")
    sig = fetcher.fetch_bytes(f"{base}/Release.gpg", label=f"{base}/Release.gpg",
                              limit=RELEASE_CAP)
    return verify_release(source, release, sig, f"{base}/Release", scratch)


@dataclass(frozen=True)
class IndexFile:
    """One verified ``Packages`` index of a source: the local (compressed) file and its URL."""

    path: Path
    url: str
    base_uri: str
    limit: int
    sha256: str = ""


def release_text(source: AptSource, fetcher: Fetcher) -> str:
    """The source's Release text, fetched (a conditional GET when cached) and verified as
    :func:`fetch_release` does, in a private scratch directory removed afterwards; once
    per ``fetcher`` (later calls return the same text, see ``Fetcher.snapshot``)."""
    key = f"release {source!r}"
    if key in fetcher.snapshot:
        return fetcher.snapshot[key].decode("utf-8", "surrogateescape")
    with scratch_dir(fetcher.root, "gpgv-") as scratch:
        scratch.chmod(0o700)
        text = fetch_release(source, fetcher, scratch)
    fetcher.snapshot[key] = text.encode("utf-8", "surrogateescape")
    return text


def index_files(source: AptSource, fetcher: Fetcher, *, arch: str) -> list[IndexFile]:
    """The source's ``Packages`` indexes for ``arch``, each checked against Release."""
    base = _dist_url(source)
    hashes = parse_release(release_text(source, fetcher), f"{base}/Release")
    arches = source.architectures or (arch,)
    dirs = [""] if source.flat else [f"{c}/binary-{a}/" for c in source.components
                                     for a in arches]
    return [_index_file(source, fetcher, base, d, hashes) for d in dirs]


def load_catalogue(source: AptSource, fetcher: Fetcher, *, arch: str) -> list[PackageMeta]:
    """Every package the source offers for ``arch`` (and ``all``), checked against Release."""
    out: list[PackageMeta] = []
    for index in index_files(source, fetcher, arch=arch):
        with _open_index(index.path, index.url) as f:
            out.extend(_catalogue_entry(stanza, index.base_uri)
                       for stanza in iter_stanzas(f, index.url, index.limit))
    return out


def read_index(index: IndexFile) -> bytes:
    """The decompressed content of an index, refused beyond the size Release declares."""
    with _open_index(index.path, index.url) as f:
        data = f.read(index.limit + 1)
    if len(data) > index.limit:
        raise RepoMetadataError(f"{index.url} is larger than Release declares")
    return data


def download_fields(data: bytes) -> Iterator[tuple[str, ...]]:
    """(name, version, arch, Filename, SHA256, Size, Installed-Size) of every stanza."""
    keys = (b"Package", b"Version", b"Architecture", b"Filename", b"SHA256", b"Size",
            b"Installed-Size")
    for chunk in data.split(b"\n\n"):
        fields = {}
        for line in chunk.split(b"\n"):
            k, sep, v = line.partition(b": ")
            if sep and k in keys:
                fields[k] = v.strip().decode("utf-8", "replace")
        if b"Package" in fields:
            yield tuple(fields.get(k, "") for k in keys)


def _index_file(source: AptSource, fetcher: Fetcher, base: str, d: str,
                hashes: dict[str, tuple[str, int]]) -> IndexFile:
    for name in _INDEX_VARIANTS:
        if f"{d}{name}" in hashes:
            digest, size = hashes[f"{d}{name}"]
            url = f"{base}/{d}{name}"
            path = fetcher.fetch(url, expected=Expected("sha256", digest, size), label=url)
            plain = hashes.get(f"{d}Packages")
            return IndexFile(path, url, source.uri, plain[1] if plain else INDEX_CAP, digest)
    raise RepoMetadataError(f"Release of {base} lists no Packages index under '{d}'")


def _open_index(path: Path, url: str) -> IO[bytes]:
    suffix = Path(url).suffix
    if suffix == ".xz":
        return lzma.open(path, "rb")
    if suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))  # typeshed: GzipFile is no IO[bytes]
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def iter_stanzas(f: IO[bytes], url: str, limit: int) -> Iterator[str]:
    """Stanzas of a (decompressing) stream, never holding more than one stanza;
    more than ``limit`` decompressed bytes, or a stanza over 1 MiB, raises."""
    lines: list[bytes] = []
    total = size = 0
    try:
        for line in f:
            total += len(line)
            size += len(line)
            if total > limit or size > STANZA_CAP:
                raise RepoMetadataError(f"{url} expands beyond its declared size")
            if line.strip():
                lines.append(line)
                continue
            if lines:
                yield b"".join(lines).decode("utf-8", "replace")
            lines, size = [], 0
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise ChecksumMismatch(f"{url}: corrupt index: {e}") from e
    if lines:
        yield b"".join(lines).decode("utf-8", "replace")


def _catalogue_entry(stanza: str, base_uri: str) -> PackageMeta:
    meta = meta_from_control(stanza, origin=Origin.CATALOGUE)
    loc = f"{base_uri}/{urllib.parse.quote(meta.location, safe='/~+')}" if meta.location else ""
    return meta.with_origin(Origin.CATALOGUE, location=loc)


def parse_packages(text: str, base_uri: str) -> list[PackageMeta]:
    """Stanzas of a Packages index to catalogue records with absolute download URLs."""
    return [_catalogue_entry(s, base_uri) for s in text.split("\n\n") if s.strip()]


def download_deb(meta: PackageMeta, fetcher: Fetcher) -> Path:
    """The .deb of a catalogue entry, from the cache or the source, checked against its SHA256."""
    if not meta.location or not meta.checksum:
        raise RepoMetadataError(f"catalogue entry {meta.nevra} has no Filename or SHA256")
    return fetcher.fetch(meta.location, expected=Expected("sha256", meta.checksum,
                                                          meta.size or None),
                         label=f"{meta.name}_{meta.evr}_{meta.arch}.deb")
