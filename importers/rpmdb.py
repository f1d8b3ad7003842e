"""rpm's database inside a commit: ``rpmdb.sqlite`` header blobs, read without a checkout.

Location: the first of :data:`DB_DIRS` holding ``rpmdb.sqlite``.  The sqlite
file (and its -wal, if the commit has one) is copied from the store into a
scratch directory under the repository's tmp/ and opened there, so nothing is
ever written next to an object.  Table ``Packages(hnum, blob)`` holds one header blob per package,
parsed by :mod:`importers.rpmheader` exactly like a package file's header.
"""

from __future__ import annotations

import sqlite3

from importers.errors import PackageDbError, PackageFormatError
from importers.model import Origin, PackageMeta
from importers.rpmheader import parse_blob
from importers.treeread import CommitReader
from store.fsutil import scratch_dir
from store.repo import Repo

DB_DIRS = ("usr/lib/sysimage/rpm", "usr/share/rpm", "var/lib/rpm")


def find_db(reader: CommitReader) -> str | None:
    """Path of the commit's rpmdb.sqlite, or None."""
    for d in DB_DIRS:
        found = reader.resolve(f"{d}/rpmdb.sqlite")
        if found is not None and isinstance(found[1], str):
            return f"{d}/rpmdb.sqlite"
    return None


def read_installed(repo: Repo, rev: str, *, with_files: bool = True,
                   db_order: bool = False) -> list[PackageMeta]:
    """Every package in the commit's rpm database, sorted by name and arch (or in the
    database's order, which is install order, with ``db_order``).

    ``gpg-pubkey`` pseudo-packages are left out, as ``rpm -qa`` users expect.
    """
    from importers.rpm import meta_from_header  # not at the top: it loads the payload reader

    reader = CommitReader(repo, rev)
    db = find_db(reader)
    if db is None:
        raise PackageDbError(f"no rpm database in {rev} (looked in {', '.join(DB_DIRS)})")
    with scratch_dir(repo.tmp_dir, "rpmdb-") as scratch:
        local = scratch / "rpmdb.sqlite"
        reader.copy_to(db, local)
        reader.copy_to(f"{db}-wal", scratch / "rpmdb.sqlite-wal")
        blobs = _blobs(local, f"{db} of {rev}")
    out = []
    for hnum, blob in blobs:
        try:
            header = parse_blob(blob, f"header #{hnum} in {db} of {rev}")
            meta = meta_from_header(header, origin=Origin.INSTALLED, with_files=with_files)
        except PackageFormatError as e:
            raise PackageDbError(str(e)) from e
        if meta.name != "gpg-pubkey":
            out.append(meta)
    return out if db_order else sorted(out, key=lambda m: (m.name, m.arch, m.evr))


def _blobs(path: object, label: str) -> list[tuple[int, bytes]]:
    try:
        con = sqlite3.connect(f"file:{path}", uri=True)
        try:
            return [(int(h), bytes(b)) for h, b in
                    con.execute("SELECT hnum, blob FROM Packages ORDER BY hnum")]
        finally:
            con.close()
    except sqlite3.Error as e:
        raise PackageDbError(f"cannot read {label}: {e}") from e
