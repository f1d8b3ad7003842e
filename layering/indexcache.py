"""A cache of apt indexes as libsolv reads them, keyed by each index's SHA256.

::

    tmp/cache/solv/<sha256>.solv   the repo in libsolv's own format (loads in milliseconds)
    tmp/cache/solv/<sha256>.tsv    name, version, arch, Filename, SHA256, Size, Installed-Size

An index is parsed once per version: later composes load the ``.solv`` file and
build the records of the packages they pick from the table.  Entries are
written atomically; a missing or unreadable one is rebuilt.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import solv

from importers.aptsource import IndexFile, download_fields, read_index
from importers.debcontrol import split_version
from importers.errors import RepoMetadataError
from importers.model import Origin, PackageMeta, PackageType
from store.fsutil import atomic_write


def cache_dir(tmp_dir: Path) -> Path:
    return tmp_dir / "cache" / "solv"


def load(repo: solv.Repo, index: IndexFile, tmp_dir: Path,
         also: tuple[Path, ...] = ()) -> dict[tuple[str, str, str], str]:
    """Fill ``repo`` from ``index``; return (name, evr, arch) -> table line for records.

    The cache is looked for in ``tmp_dir``'s, then in the solv directories ``also``
    (only read); a parse is written to ``tmp_dir``'s."""
    d = cache_dir(tmp_dir)
    key = index.sha256
    for where in (d, *also) if key else ():
        solv_file, table = where / f"{key}.solv", where / f"{key}.tsv"
        if solv_file.exists() and table.exists():
            f = solv.xfopen(str(solv_file))
            if f is None:  # unreadable: parse the index again
                continue
            try:
                if repo.add_solv(f):
                    return _read_table(table)
            finally:
                f.close()
            repo.empty()
    solv_file, table = d / f"{key}.solv", d / f"{key}.tsv"
    data = read_index(index)
    _add_packages(repo, data, index, d)
    lines = ["\t".join(fields) for fields in download_fields(data)]
    if key:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.solv.{os.getpid()}"
        out = solv.xfopen(str(tmp), "w")
        repo.write(out)
        out.close()
        os.replace(tmp, solv_file)
        atomic_write(table, "\n".join(lines).encode(), sync=False)
    return {(f[0], f[1], f[2]): line for line in lines if len(f := line.split("\t")) == 7}


def _add_packages(repo: solv.Repo, data: bytes, index: IndexFile, d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".plain-{os.getpid()}"
    tmp.write_bytes(data)
    try:
        f = solv.xfopen(str(tmp))
        try:
            if not repo.add_debpackages(f):
                raise RepoMetadataError(f"libsolv cannot read {index.url}")
        finally:
            f.close()
    finally:
        tmp.unlink()


def _read_table(path: Path) -> dict[tuple[str, str, str], str]:
    out = {}
    for line in path.read_text().splitlines():
        f = line.split("\t")
        if len(f) == 7:
            out[(f[0], f[1], f[2])] = line
    return out


def record(line: str, base_uri: str) -> PackageMeta:
    """A catalogue record with what a download needs, from one table line."""
    name, version, arch, filename, sha256, size, isize = line.split("\t")
    epoch, upstream, revision = split_version(version)
    loc = f"{base_uri}/{urllib.parse.quote(filename, safe='/~+')}" if filename else ""
    return PackageMeta(type=PackageType.DEB, name=name, version=upstream, release=revision,
                       epoch=epoch, arch=arch, origin=Origin.CATALOGUE,
                       location=loc, checksum=sha256, size=int(size or 0),
                       installed_size=int(isize or 0))


DEP_FIELDS = (b"Package", b"Version", b"Architecture", b"Pre-Depends", b"Depends", b"Recommends")


def dep_lines(data: bytes) -> Iterator[str]:
    """``name, version, arch, Pre-Depends, Depends, Recommends`` (tab-separated) of every
    stanza, the relation fields as the index writes them (libsolv's own ``.solv`` files do
    not keep their order, which apt's choices depend on)."""
    for chunk in data.split(b"\n\n"):
        fields: dict[bytes, bytes] = {}
        key = b""
        for line in chunk.split(b"\n"):
            if line[:1] in (b" ", b"\t") and key in fields:
                fields[key] += b" " + line.strip()
                continue
            key, sep, v = line.partition(b":")
            if sep and key in DEP_FIELDS:
                fields[key] = v.strip()
        if b"Package" in fields:
            yield "\t".join(fields.get(k, b"").decode("utf-8", "replace").replace("\t", " ")
                            for k in DEP_FIELDS)


def load_dep_fields(index: IndexFile, tmp_dir: Path,
                    also: tuple[Path, ...] = ()) -> dict[str, str]:
    """``name\tevr\tarch`` -> the relation fields of that package (``dep_lines`` less the
    key, tab-separated), cached beside the ``.solv`` file as ``<sha256>.deps`` (looked
    for in ``also`` too, as :func:`load`)."""
    path = cache_dir(tmp_dir) / f"{index.sha256}.deps"
    text = None
    for where in (path.parent, *also) if index.sha256 else ():
        with contextlib.suppress(OSError):
            text = (where / path.name).read_text()
            break
    if text is None:
        text = "\n".join(dep_lines(read_index(index)))
        if index.sha256:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text.encode(), sync=False)
    out = {}
    for line in text.splitlines():
        key, sep, rest = line.rpartition("\t")  # the three fields are the last ones
        key, sep, mid = key.rpartition("\t")
        key, sep, first = key.rpartition("\t")
        if sep:
            out[key] = f"{first}\t{mid}\t{rest}"
    return out
