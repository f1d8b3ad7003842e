"""man-db's index (``/var/cache/man/**/index.db``) compared entry by entry, as man-db reads it.

For each page mandb stores (``accessdb`` shows it): name, extension, section, the
page's mtime, an id (``A`` ULT_MAN: the page is its own source; ``B`` SO_MAN: a
symlink, hard link or ``.so`` include of another page; ``C`` a whatis
reference), pointer, filter, compression and whatis.  Two of these depend on how
the tree is stored, not on what is installed (man-db 2.11, ``src/check_mandirs.c``
``test_manfile``, ``src/ult_src.c``):

- the mtime: ``test_manfile`` takes it from ``lstat`` of the page.  An OSTree
  tree stores no mtimes: every regular file has mtime 0, a symlink has the time
  its repository object was written (the commit's, not the package's);
- ``A`` or ``B`` for a page with hard links: ``ult_src(SO_LINK | SOFT_LINK |
  HARD_LINK)`` resolves a symlink, then, because ``lstat`` of the page gave
  ``st_nlink > 1``, ``ult_hardlink`` replaces the result by the least-named entry
  of the target's directory that has the page's own inode; ``test_manfile`` says
  ``A`` when that result is the page itself.  In an OSTree checkout every file
  and symlink is a hard link of its repository object, so ``gpic.1.gz -> pic.1.gz``
  finds itself (``gpic.1.gz`` < ``pic.1.gz``) and is marked ``A``; the symlink
  dpkg made has one link and is marked ``B``.  ``mandb -c`` in the deployment gives
  the same ``A``; a copy of that deployment without the hard links gives ``B``.

:func:`index_diff` leaves the mtimes out and accepts a differing ``A``/``B`` only
where both sides' page files are the same (same type, same symlink target), the
flag on each side is the one that rule gives for that side's own page, and the
rule without its hard-link step gives the same flag on both sides.  Everything else
(the set of keys, names, sections, pointers, filters, compression, whatis) must be equal.
"""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
from pathlib import Path

# mandb's catpath (below var/cache/man) -> manpath (Debian's /etc/manpath.config MANDB_MAP)
CATPATHS = {"fsstnd": "usr/man", "oldlocal": "usr/local/man", "local": "usr/local/share/man",
            "X11R6": "usr/X11R6/man", "opt": "opt/man", "snap": "snap/man"}
FIELDS = ("name", "ext", "sec", "mtime", "mtime_ns", "id", "pointer", "filter", "comp", "whatis")
MTIME = (FIELDS.index("mtime"), FIELDS.index("mtime_ns"))
ID = FIELDS.index("id")
MAX_LINKS = 40
OTHER_COMPRESSIONS = (".bz2", ".xz", ".lzma", ".Z", ".z", ".zst", ".lz", ".br")


def manpath_of(index_rel: str) -> str:
    """The manual hierarchy (relative to the root) that the index ``var/cache/man/.../index.db``
    describes: ``usr/share/man`` for the top one, ``usr/share/man/LANG`` for a language."""
    parts = index_rel.split("/")[3:-1]
    if parts and parts[0] in CATPATHS:
        return "/".join([CATPATHS[parts[0]], *parts[1:]])
    return "/".join(["usr/share/man", *parts])


def read_index(path: str) -> dict[str, str]:
    """``accessdb``'s dump of a man-db index: key -> the quoted value."""
    out = subprocess.run(["accessdb", path], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    entries = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" -> ")
        entries[key if sep else line] = value
    return entries


def _fields(value: str) -> tuple[str, ...] | None:
    """A page entry's fields (None for the version stamp and multi-key lists)."""
    if not (value.startswith('"') and value.endswith('"')) or value.startswith('" '):
        return None
    fields = value[1:-1].split(" ", len(FIELDS) - 1)
    return tuple(fields) if len(fields) == len(FIELDS) else None


def _without(fields: tuple[str, ...], drop: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f for i, f in enumerate(fields) if i not in drop)


def _page(man: Path, key: str, fields: tuple[str, ...]) -> Path:
    """The page file an entry stands for: MANPATH/manSEC/NAME.EXT[.COMP]."""
    f = dict(zip(FIELDS, fields, strict=True))
    name = key.partition("~")[0] if f["name"] == "-" else f["name"]
    comp = "" if f["comp"] == "-" else f".{f['comp']}"
    return man / f"man{f['sec']}" / f"{name}.{f['ext']}{comp}"


def _resolve(root: Path, path: Path) -> Path | None:
    """``path`` with its symlinks followed inside ``root`` (None: dangling, a loop, outside)."""
    for _ in range(MAX_LINKS):
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                return path if path.is_relative_to(root) else None
            target = os.readlink(path)
        except OSError:
            return None
        path = Path(os.path.normpath(root / target.lstrip("/") if target.startswith("/")
                                     else path.parent / target))
    return None


def _least_hardlink(path: Path, ino: int) -> Path:
    """man-db's ``ult_hardlink``: the least-named entry of ``path``'s directory with inode
    ``ino``, if it sorts before ``path``'s name (else ``path``)."""
    best = os.fsencode(path.name)
    with os.scandir(path.parent) as it:
        for e in it:
            if e.inode() == ino and os.fsencode(e.name) < best:
                best = os.fsencode(e.name)
    return path.parent / os.fsdecode(best)


def _has_include(path: Path) -> bool | None:
    """Whether the page starts with a relative ``.so`` (None: a compression we do not read)."""
    if path.suffix in OTHER_COMPRESSIONS:
        return None
    try:
        with (gzip.open(path, "rt", errors="replace") if path.suffix == ".gz"
              else open(path, errors="replace")) as f:
            for _, line in zip(range(1000), f, strict=False):
                if not line.startswith('.\\"'):
                    rest = line.lstrip()
                    return rest.startswith(".so") and not rest[3:].lstrip().startswith("/")
    except (OSError, EOFError):
        return None
    return False


def page_id(root: Path, page: Path, *, hard_links: bool = True) -> str | None:
    """The id ``test_manfile`` gives ``page`` of the tree at ``root``: ``A`` when ult_src
    (symlinks, then hard links unless ``hard_links`` is False) ends at the page itself, else
    ``B``; None when it cannot say (unreadable page, dangling link, ``.so`` include)."""
    try:
        st = os.lstat(page)
    except OSError:
        return None
    ult = _resolve(root, page) if stat.S_ISLNK(st.st_mode) else page
    if ult is None:
        return None
    if hard_links and st.st_nlink > 1:
        ult = _least_hardlink(ult, st.st_ino)
    if _has_include(ult) is not False:
        return None
    stem = str(page)[:-len(page.suffix)] if page.suffix == ".gz" else str(page)
    return "A" if str(ult).startswith(stem) else "B"


def _same_page_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    return not stat.S_ISLNK(sa.st_mode) or os.readlink(a) == os.readlink(b)


def _hard_link_flag(key: str, s: tuple[str, ...], a: tuple[str, ...], roots: tuple[Path, Path],
                    man: str) -> bool:
    """Whether ``A`` versus ``B`` of entry ``key`` is man-db's hard-link rule applied to each
    side's own copy of the same page (see the module docstring)."""
    if _without(s, (*MTIME, ID)) != _without(a, (*MTIME, ID)) or {s[ID], a[ID]} != {"A", "B"}:
        return False
    (sroot, aroot) = roots
    spage, apage = _page(sroot / man, key, s), _page(aroot / man, key, a)
    if not _same_page_file(spage, apage):
        return False
    plain = page_id(sroot, spage, hard_links=False)
    return (plain is not None and plain == page_id(aroot, apage, hard_links=False)
            and page_id(sroot, spage) == s[ID] and page_id(aroot, apage) == a[ID])


def index_diff(strata_db: str, apt_db: str, roots: tuple[Path, Path] | None,
               man: str) -> list[str]:
    """The entries in which two man-db indexes of the manual hierarchy ``man`` (relative to
    ``roots``: strata's tree, apt's) differ, page mtimes aside, and the hard-link flag aside
    where man-db's rule explains it (never without ``roots``)."""
    s, a = read_index(strata_db), read_index(apt_db)
    lines = []
    for key in sorted(s.keys() | a.keys()):
        sv, av = s.get(key), a.get(key)
        if sv is None or av is None:
            lines.append(f"{key}: only in {'apt' if sv is None else 'strata'}'s index")
            continue
        sf, af = _fields(sv), _fields(av)
        if sv == av or (sf and af and (_without(sf, MTIME) == _without(af, MTIME)
                                       or (roots is not None
                                           and _hard_link_flag(key, sf, af, roots, man)))):
            continue
        lines.append(f"{key}: strata {sv} | apt {av}")
    return lines
