"""Keeping an image's dpkg database true after layering: ``status`` and ``info/``.

The database travels with the image under ``/usr`` (see :mod:`layering.convert`).
For each added package: a ``status`` stanza (``Status: install ok installed``,
``Conffiles`` with their md5), ``info/NAME.list``, ``NAME.md5sums``,
``NAME.conffiles`` and the maintainer scripts; removed packages lose theirs;
paths taken over through ``Replaces`` leave the replaced package's list.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Mapping, Sequence

from debian.deb822 import Deb822

from importers.model import FileKind, PackageMeta
from store.mtree import MutableTree
from store.objects import FileMeta
from store.repo import Repo
from store.txn import Transaction

STATUS_ORDER = ("Package", "Status")
SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config", "triggers", "templates",
           "shlibs", "symbols", "md5sums")
DATA = ("triggers", "templates", "shlibs", "symbols", "md5sums")  # not executable


def info_name(pkg: PackageMeta) -> str:
    """``NAME`` or ``NAME:ARCH`` (Multi-Arch: same), as dpkg names its info files."""
    return f"{pkg.name}:{pkg.arch}" if pkg.multi_arch == "same" else pkg.name


def read_tree_file(repo: Repo, tree: MutableTree, path: str) -> bytes | None:
    """The content of the regular file or symlink target at ``path`` in ``tree``, or None
    when there is none (or it is a directory)."""
    node = tree.lookup(path)
    if not isinstance(node, str):
        return None
    return repo.load_file(node)[1]


def _write(txn: Transaction, tree: MutableTree, path: str, data: bytes, mode: int = 0o644) -> None:
    tree.ensure_dir(path.rpartition("/")[0])
    tree.set_file(path, txn.write_file(FileMeta(0, 0, stat.S_IFREG | mode), data))


def _conffile_md5(repo: Repo, tree: MutableTree, path: str) -> str:
    data = read_tree_file(repo, tree, path)
    return hashlib.md5(data).hexdigest() if data is not None else "newconffile"


def status_stanza(pkg: PackageMeta, conffile_md5: dict[str, str],
                  obsolete: Sequence[tuple[str, str]] = ()) -> str:
    """The ``status`` entry of an installed package, fields in dpkg's order; ``obsolete``
    (path, md5) conffiles an upgrade kept follow its own, marked as dpkg marks them."""
    para = Deb822(pkg.control)
    for key in ("Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512", "Description-md5"):
        para.pop(key, None)
    out = Deb822()
    out["Package"] = para["Package"]
    out["Status"] = "install ok installed"
    for k, v in para.items():
        if k not in STATUS_ORDER and k != "Description":
            out[k] = v
    lines = [f" /{c} {conffile_md5.get(c, 'newconffile')}" for c in pkg.conffiles]
    lines += [f" /{c} {md5} obsolete" for c, md5 in obsolete]
    if lines:
        out["Conffiles"] = "\n" + "\n".join(lines)
    if "Description" in para:
        out["Description"] = para["Description"]
    return out.dump().rstrip("\n") + "\n"


def list_file(pkg: PackageMeta, drop: set[str], kept: Sequence[str] = ()) -> bytes:
    """``info/NAME.list``: ``/.`` then every path of the package, as dpkg writes it, then
    the ``kept`` obsolete conffiles of an upgrade."""
    paths = ["/."] + [f"/{f.path}" for f in pkg.files if f.path and f.path not in drop]
    paths += [f"/{c}" for c in kept]
    return "".join(p + "\n" for p in paths).encode()


def md5sums_file(pkg: PackageMeta) -> bytes:
    """``info/NAME.md5sums`` from the package's own md5sums (conffiles excluded, as dpkg)."""
    lines = [f"{f.digest[4:]}  {f.path}\n" for f in pkg.files
             if f.digest.startswith("md5:") and f.kind in (FileKind.FILE, FileKind.HARDLINK)
             and not f.config]
    return "".join(lines).encode()


def update(repo: Repo, txn: Transaction, tree: MutableTree, db: str, *,
           add: list[PackageMeta], remove: list[PackageMeta],
           taken_over: dict[str, set[str]], etc_dir: str,
           obsolete: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> None:
    """Rewrite ``db/status`` and ``db/info`` for the added and removed packages
    (``obsolete``: name -> the conffiles an upgraded package keeps, with their md5)."""
    removed = {p.name for p in remove}
    added = {p.name: p for p in add}
    status = (read_tree_file(repo, tree, f"{db}/status") or b"").decode("utf-8", "replace")
    stanzas = {}
    for para in Deb822.iter_paragraphs(status):
        name = para.get("Package", "")
        if name and name not in removed and name not in added:
            stanzas[name] = para.dump().rstrip("\n") + "\n"
    for pkg in remove:
        for suffix in (".list", ".md5sums", ".conffiles", *(f".{s}" for s in SCRIPTS)):
            tree.remove(f"{db}/info/{info_name(pkg)}{suffix}")
    for pkg in add:
        md5 = {c: _conffile_md5(repo, tree, etc_dir + c[3:] if c.startswith("etc/") else c)
               for c in pkg.conffiles}
        stale = (obsolete or {}).get(pkg.name, ())
        stanzas[pkg.name] = status_stanza(pkg, md5, stale)
        write_info(txn, tree, db, pkg, taken_over.get(pkg.name, set()), [c for c, _ in stale])
    for owner, paths in taken_over.items():
        if owner in added:
            continue
        current = read_tree_file(repo, tree, f"{db}/info/{owner}.list")
        if current is not None:
            kept = [p for p in current.decode().splitlines() if p.lstrip("/") not in paths]
            _write(txn, tree, f"{db}/info/{owner}.list", "".join(p + "\n" for p in kept).encode())
    body = "\n".join(stanzas[n] for n in sorted(stanzas))
    _write(txn, tree, f"{db}/status", body.encode())


def write_info(txn: Transaction, tree: MutableTree, db: str, pkg: PackageMeta,
               drop: set[str], kept: Sequence[str] = ()) -> None:
    """Write ``db/info/NAME.*`` of an added package: its file list (without the paths in
    ``drop``, with the ``kept`` obsolete conffiles), md5sums, conffiles and control files
    (scripts executable)."""
    base = f"{db}/info/{info_name(pkg)}"
    _write(txn, tree, f"{base}.list", list_file(pkg, drop, kept))
    sums = md5sums_file(pkg)
    if sums and not any(s.name == "md5sums" for s in pkg.scripts):  # else the package's own
        _write(txn, tree, f"{base}.md5sums", sums)
    if pkg.conffiles:
        _write(txn, tree, f"{base}.conffiles", "".join(f"/{c}\n" for c in pkg.conffiles).encode())
    for script in pkg.scripts:
        mode = 0o644 if script.name in DATA else 0o755
        _write(txn, tree, f"{base}.{script.name}", script.data(), mode)
