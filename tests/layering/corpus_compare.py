"""Comparing the system strata layered with the one apt-get installed: files, packages, users.

A side is read as a mapping ``path -> Entry`` (type, mode, owner, size, symlink
target, file capabilities); contents are compared when the metadata agree, by
inode first (both sides hardlink unchanged files to the same repository
objects) and by SHA-256 otherwise.  Paths that are not installed state are left
out, each for the reason in :data:`EXCLUDED` (:data:`ENTRY_ONLY`: the entry,
not what is below it); files whose content is random by design are compared
by metadata only (:data:`RANDOM_CONTENT`); bytecode and man-db's index are compared
without what depends on how the tree is stored (:data:`STORAGE_DEPENDENT`); D-Bus's
machine ID is checked against the host's /etc/machine-id (:func:`machine_id_diff`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from tests.layering.corpus_mandb import index_diff, manpath_of

# path pattern (fnmatch on the relative path; a directory pattern drops what is below) -> why
EXCLUDED: dict[str, str] = {
    "proc": "kernel mount point", "sys": "kernel mount point", "dev": "device mount point",
    "run": "tmpfs at boot", "tmp": "tmpfs / cleaned at boot",
    "usr/etc": "OSTree layout: the image's default /etc (the deployment's /etc is compared)",
    "var/lib/apt/lists": "apt's downloaded indexes (apt-get update), not installed state",
    "var/cache/apt": "apt's archive and binary caches",
    "var/log/apt": "log of the installing tool", "var/log/dpkg.log": "log of the installing tool",
    "var/log/alternatives.log": "log of the installing tool",
    "var/cache/debconf/*-old": "debconf's backup of its previous database",
    "usr/lib/sysimage/dpkg/*-old": "dpkg's backup of its previous database",
    "usr/lib/sysimage/dpkg/lock*": "dpkg's lock files", "usr/lib/sysimage/dpkg/triggers/Lock":
    "dpkg's lock files", "usr/lib/sysimage/dpkg/status": "compared parsed (see status_diff)",
    "usr/lib/tmpfiles.d/strata-*.conf": "strata's transport of /var content to a stateroot",
    "usr/share/factory/var": "strata's transport of /var content to a stateroot",
    "sysroot": "OSTree deployment mount point", "ostree": "OSTree deployment symlink",
    "var/lib/dbus/machine-id": "host identity, not a compose's: apt in a chroot keeps the ID "
    "dbus-uuidgen made there, strata leaves the host's /etc/machine-id to dbus's own tmpfiles "
    "link (checked by machine_id_diff)",
}
EXCLUDED["var/lib/apt/extended_states"] = (
    "apt's own auto-installed marks (for apt autoremove); strata keeps what was requested in "
    "the deployment's origin and layers every dependency with it")
# the entry itself is left out (its content is compared)
ENTRY_ONLY: dict[str, str] = {
    "usr/share/factory": "holds strata's /var transport (systemd ships files below it too)",
}
RANDOM_CONTENT: dict[str, str] = {
    "var/cache/ldconfig/aux-cache": "ldconfig's cache of library inode numbers and times",
    "var/cache/fontconfig/*": "fontconfig's caches record the font directories' mtimes (0 in "
    "an OSTree tree, where every mtime is 0; each cache is valid for its own tree)",
    "etc/ssh/ssh_host_*": "host keys are generated at random",
    "etc/machine-id": "random by design",
    "var/lib/systemd/random-seed": "random by design",
    "etc/ssl/private/ssl-cert-snakeoil.key": "make-ssl-cert (ssl-cert's postinst) makes a new "
    "random key", "etc/ssl/certs/ssl-cert-snakeoil.pem": "self-signed with that random key",
    "etc/aliases.db": "a Berkeley DB file: its meta page holds a unique file ID (made from the "
    "file's inode, device and the time when newaliases created it)",
}
# compared semantically, without the fields that record how the tree is stored
PYC, MAN_INDEX = "*.pyc", "var/cache/man/*index.db"
STORAGE_DEPENDENT: dict[str, str] = {
    PYC: "a timestamp-based .pyc records its source's mtime: 0 in an OSTree tree, the "
    ".deb's in apt's (compared without that field)",
    MAN_INDEX: "man-db's index cache (man-db.timer runs mandb daily to update it) "
    "records each page's lstat mtime (0 for files in an OSTree tree, the object's write time for "
    "symlinks) and marks a page 'A' or 'B' by man-db's hard-link rule (every OSTree file is a "
    "hard link of its object): compared entry by entry without the mtimes, the flag only where "
    "that rule on each side's own page explains it (tests/layering/corpus_mandb.py)",
}


@dataclass(frozen=True)
class Entry:
    """One path of a side: what is compared, and where its bytes are read from."""

    kind: str  # "f", "d", "l", "?" (anything else)
    mode: int
    uid: int
    gid: int
    size: int
    target: str
    caps: bytes
    real: str

    def meta(self) -> tuple[str, int, int, int, str, bytes]:
        return (self.kind, self.mode, self.uid, self.gid, self.target, self.caps)


def excluded(rel: str) -> bool:
    """Whether ``rel`` (or a directory above it) is left out of the comparison."""
    parts = rel.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pat)
               for i in range(1, len(parts) + 1) for pat in EXCLUDED)


def _caps(path: str) -> bytes:
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return b""


def entry(path: str, real: str) -> Entry:
    st = os.lstat(path)
    kind = ("f" if stat.S_ISREG(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode)
            else "l" if stat.S_ISLNK(st.st_mode) else "?")
    target = os.readlink(path) if kind == "l" else ""
    return Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                 st.st_size if kind == "f" else 0, target, _caps(path) if kind == "f" else b"",
                 real)


def snapshot(root: Path, prefix: str = "", real_of: Callable[[str], str] | None = None,
             skip: tuple[str, ...] = ()) -> dict[str, Entry]:
    """Every path under ``root`` (named ``prefix/...``) that is not excluded or in ``skip``."""
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = prefix if rel_dir == "." else f"{prefix}/{rel_dir}" if prefix else rel_dir
        keep = []
        for name in dirnames + filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if excluded(rel) or rel in skip:
                continue
            path = os.path.join(dirpath, name)
            if rel not in ENTRY_ONLY:
                out[rel] = entry(path, real_of(rel) if real_of else path)
            if name in dirnames and not os.path.islink(path):
                keep.append(name)
        dirnames[:] = keep
    return out


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _pyc_without_mtime(path: str) -> bytes:
    """A timestamp-based .pyc (PEP 552 flags 0) without its source-mtime field: OSTree stores
    every mtime as 0, so bytecode compiled in a layered tree records 0 where apt's records
    the .deb's mtime (each valid for its own tree)."""
    with open(path, "rb") as f:
        data = f.read()
    return data[:8] + data[12:] if data[4:8] == b"\0\0\0\0" else data


def _content_diff(a: Entry, b: Entry, rel: str, roots: tuple[Path, Path] | None) -> str | None:
    """None when strata's ``a`` and apt's ``b`` hold the same content, else what differs."""
    sa, sb = os.stat(a.real), os.stat(b.real)
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino) or (
            a.size == b.size and _digest(a.real) == _digest(b.real)):
        return None
    what = f"content differs ({a.size}B | {b.size}B)"
    if fnmatch.fnmatchcase(rel, PYC):
        return None if _pyc_without_mtime(a.real) == _pyc_without_mtime(b.real) else what
    if fnmatch.fnmatchcase(rel, MAN_INDEX) and shutil.which("accessdb"):
        entries = index_diff(a.real, b.real, roots, manpath_of(rel))
        return f"{len(entries)} entries differ: {'; '.join(entries[:5])}" if entries else None
    return what


def _describe(e: Entry) -> str:
    extra = f" -> {e.target}" if e.kind == "l" else f" {e.size}B" if e.kind == "f" else ""
    caps = " caps" if e.caps else ""
    return f"{e.kind} {e.mode:04o} {e.uid}:{e.gid}{extra}{caps}"


def tree_diff(strata: dict[str, Entry], apt: dict[str, Entry],
              roots: tuple[Path, Path] | None = None) -> list[str]:
    """One line per differing path: ``+ path`` only strata has it, ``- path`` only apt,
    ``M path: strata ... | apt ...`` metadata, ``C path`` content (man-db's indexes entry by
    entry; their hard-link flag is explained only when the sides' ``roots`` are given)."""
    lines = []
    for rel in sorted(strata.keys() | apt.keys()):
        s, a = strata.get(rel), apt.get(rel)
        if a is None and s is not None:
            lines.append(f"+ /{rel} ({_describe(s)})")
        elif s is None and a is not None:
            lines.append(f"- /{rel} ({_describe(a)})")
        elif s is not None and a is not None:
            if s.meta() != a.meta():
                lines.append(f"M /{rel}: strata {_describe(s)} | apt {_describe(a)}")
            elif s.kind == "f" and not any(fnmatch.fnmatchcase(rel, p) for p in RANDOM_CONTENT) \
                    and (what := _content_diff(s, a, rel, roots)) is not None:
                lines.append(f"C /{rel}: {what}")
    return lines


def machine_id_diff(root: Path, var: Path, apt_has_it: bool) -> list[str]:
    """D-Bus's machine ID on strata's side (``root`` with ``var`` as /var) must be the host's:
    a symlink to /etc/machine-id or a file equal to it; absent where apt has none."""
    path, etc = var / "lib/dbus/machine-id", root / "etc/machine-id"
    if not os.path.lexists(path):
        return ["I /var/lib/dbus/machine-id: absent on strata's side"] if apt_has_it else []
    if not apt_has_it:
        return ["I /var/lib/dbus/machine-id: strata has one, apt none"]
    if os.path.islink(path):
        ok = os.readlink(path) == "/etc/machine-id"
    else:
        ok = path.is_file() and etc.is_file() and path.read_bytes() == etc.read_bytes()
    return [] if ok else ["I /var/lib/dbus/machine-id: not the host's /etc/machine-id"]


def parse_status(path: Path) -> dict[str, dict[str, str]]:
    """dpkg's status file: package -> its fields."""
    with open(path) as f:
        return {p["Package"]: dict(p) for p in Deb822.iter_paragraphs(f)}


def status_diff(strata: Path, apt: Path) -> list[str]:
    """Packages whose status stanza differs, field by field (order of stanzas ignored)."""
    s, a = parse_status(strata), parse_status(apt)
    lines = []
    for name in sorted(s.keys() | a.keys()):
        if name not in a:
            lines.append(f"+ status {name} {s[name].get('Version')}")
        elif name not in s:
            lines.append(f"- status {name} {a[name].get('Version')}")
        else:
            for k in sorted(s[name].keys() | a[name].keys()):
                if s[name].get(k) != a[name].get(k):
                    lines.append(f"S status {name} {k}: strata {s[name].get(k)!r} | "
                                 f"apt {a[name].get(k)!r}")
    return lines


# A difference line (or failure message) -> its cause, first match wins.
CAUSES: tuple[tuple[str, str], ...] = (
    (r"failure while writing changes to /etc/gshadow|Invalid argument|cannot change owner",
     "sandbox: bwrap --unshare-all maps only uid 0, chown/groupadd fail (branch sandbox)"),
    (r"dpkg-statoverride: error: (group|user) '[^']*' does not exist",
     "sandbox: the user or group was never created (addgroup failed in the user namespace; "
     "branch sandbox)"),
    (r"cannot access '/var/|No such file or directory|missing /var/",
     "empty directories of a package are not created (branch pkgfix)"),
    (r"^- /\S+ \(d ",
     "a directory apt has is missing: empty directories of a package are not created "
     "(branch pkgfix)"),
    (r"^- /usr/lib/sysimage/dpkg/info/.*[.](shlibs|symbols) ",
     "dpkg info: the shlibs/symbols control files were not installed"),
    (r"^C /usr/lib/sysimage/dpkg/info/.*[.]md5sums",
     "dpkg info: md5sums rewritten in sorted order instead of the package's file"),
    (r"^[-+C] /usr/lib/sysimage/dpkg/triggers/",
     "dpkg triggers database: trigger interests not registered / triggers left pending"),
    (r"^C /var/(cache/debconf|lib/pam|lib/ucf)/",
     "/var files that already exist (debconf database, pam-auth-update, ucf state) differ "
     "from apt's after the deploy's /var carry (boot/varcarry.py)"),
    (r"^[-+] /usr/(lib/molly-guard|sbin)/pm-|missing +/sbin/pm-",
     "preinst runs after the package's files are in place (dpkg runs it before unpacking): "
     "dpkg-divert --rename moves the package's own files"),
    (r"^I /var/lib/dbus/machine-id",
     "host identity: D-Bus's machine ID is not the host's /etc/machine-id"),
    (r"^C /etc/(passwd|group|shadow|gshadow)-?:",
     "configure order: postinsts run in dependency order, ties by name (apt's order differs), "
     "so adduser appends the same users and groups, same ids, in another line order"),
    (r"^[-C] /var/cache/man/(.*/)?index[.]db",
     "man-db's index missing or with entries that differ beyond page mtimes and the hard-link "
     "flag (man-db's postinst or trigger did not run mandb, or ran it on other pages)"),
    (r"^[-+CM] /var/",
     "/var: what scripts made or changed is not on an existing stateroot"),
)


def causes(lines: list[str]) -> dict[str, int]:
    """Each cause of ``lines`` with how many lines it explains ("unclassified" for the rest)."""
    out: dict[str, int] = {}
    for line in lines:
        cause = next((c for pat, c in CAUSES if re.search(pat, line)), "unclassified")
        out[cause] = out.get(cause, 0) + 1
    return out
