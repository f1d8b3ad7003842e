"""dpkg's database inside a commit: ``status`` and ``info/*.list``, read without a checkout.

The database directory is the first of :data:`DB_DIRS` holding a ``status``
file (OSTree-layout images keep it under /usr, because deploy ignores the
commit's /var once the stateroot has one)::

    <db>/status                 one stanza per package (Status: install ok installed)
    <db>/info/NAME.list         files of NAME (NAME:ARCH.list for Multi-Arch: same)
"""

from __future__ import annotations

from dataclasses import replace

from debian.deb822 import Deb822

from importers.debcontrol import meta_from_stanza
from importers.errors import PackageDbError, PackageFormatError
from importers.model import FileEntry, Origin, PackageMeta
from importers.treeread import CommitReader
from store.repo import Repo

DB_DIRS = ("usr/share/dpkg/database", "usr/lib/sysimage/dpkg", "usr/lib/dpkg", "var/lib/dpkg")
PRESENT_STATES = frozenset({"installed", "unpacked", "half-configured", "triggers-awaited",
                            "triggers-pending"})


def find_db(reader: CommitReader) -> str | None:
    """The dpkg database directory of the commit, or None when it has none."""
    for d in DB_DIRS:
        found = reader.resolve(f"{d}/status")
        if found is not None and isinstance(found[1], str):
            return d
    return None


def read_installed(repo: Repo, rev: str, *, with_files: bool = True,
                   db_dir: str | None = None) -> list[PackageMeta]:
    """Every package dpkg considers present in commit ``rev``, sorted by name and arch.

    Guarantees: only stanzas whose Status state is present on disk are returned
    (not ``config-files``/``not-installed``); files come from ``info/*.list``.
    """
    reader = CommitReader(repo, rev)
    db = db_dir or find_db(reader)
    if db is None:
        raise PackageDbError(f"no dpkg database in {rev} (looked in {', '.join(DB_DIRS)})")
    status = reader.read(f"{db}/status")
    if status is None:
        raise PackageDbError(f"no {db}/status in {rev}")
    lists = set(reader.listdir(f"{db}/info")) if with_files else set()
    out = []
    for stanza in Deb822.iter_paragraphs(status.decode("utf-8", "replace")):
        state = stanza.get("Status", "").split()
        if len(state) != 3 or state[2] not in PRESENT_STATES:
            continue
        meta = _meta(stanza, rev)
        if with_files:
            meta = replace(meta, files=_files(reader, db, meta, lists))
        out.append(meta)
    return sorted(out, key=lambda m: (m.name, m.arch))


def _meta(stanza: Deb822, rev: str) -> PackageMeta:
    try:
        meta = meta_from_stanza(stanza, stanza.dump(), origin=Origin.INSTALLED)
    except PackageFormatError as e:
        raise PackageDbError(f"bad dpkg status entry in {rev}: {e}") from e
    conffiles = tuple(line.split()[0].lstrip("/") for line in
                      stanza.get("Conffiles", "").strip().splitlines() if line.strip())
    return replace(meta, conffiles=conffiles)


def _files(reader: CommitReader, db: str, meta: PackageMeta,
           lists: set[str]) -> tuple[FileEntry, ...]:
    for name in (f"{meta.name}:{meta.arch}.list", f"{meta.name}.list"):
        if name in lists:
            data = reader.read(f"{db}/info/{name}") or b""
            paths = (p.strip().lstrip("/") for p in data.decode("utf-8", "replace").splitlines())
            conffiles = frozenset(meta.conffiles)
            return tuple(FileEntry(path=p, config=p in conffiles) for p in paths
                         if p and p != ".")
    return ()
