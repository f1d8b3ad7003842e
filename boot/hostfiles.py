"""Host state in ``/etc`` that a new deployment takes from the host, not from the image.

- The user database (``passwd``, ``group``, ``shadow``, ``gshadow``): the new
  ``/etc`` file is the host's, plus the entries the new image's defaults added
  (names absent from the old defaults and from the host's file: the system
  users a layered package created), plus group members the new defaults added.
  Nobody's entry is lost: not the admin's ``useradd alice``, not a package's
  ``adduser --system sshd``; an entry the admin deleted is not brought back.
- Host identity (:data:`IDENTITY`: SSH host keys, ``machine-id``, the snakeoil
  certificate): a file the host has is carried byte for byte, whatever the new
  image's defaults hold.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from store.fsutil import atomic_write

USER_DB = ("passwd", "group", "shadow", "gshadow")
MEMBERS_FIELD = {"group": 3, "gshadow": 3}
IDENTITY = ("machine-id", "ssh/ssh_host_*", "ssl/private/ssl-cert-snakeoil.key",
            "ssl/certs/ssl-cert-snakeoil.pem", "dropbear/dropbear_*_host_key")
MAX_DB = 16 << 20


def read_regular(path: Path, limit: int = MAX_DB) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (not followed if a symlink) of at most
    ``limit`` bytes, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def entries(data: bytes) -> dict[bytes, bytes]:
    """``name -> line`` of a colon-separated database (blank and malformed lines dropped)."""
    out: dict[bytes, bytes] = {}
    for line in data.splitlines():
        name = line.split(b":", 1)[0]
        if b":" in line and name and name not in out:
            out[name] = line
    return out


def with_members(line: bytes, added: list[bytes], index: int) -> bytes:
    """``line`` with ``added`` appended to its member list (field ``index``), no duplicates."""
    fields = line.split(b":")
    if len(fields) <= index:
        return line
    have = [m for m in fields[index].split(b",") if m]
    fields[index] = b",".join(have + [m for m in added if m not in have])
    return b":".join(fields)


def members(line: bytes | None, index: int) -> list[bytes]:
    """The member list (field ``index``) of a group line."""
    fields = line.split(b":") if line else []
    return [m for m in fields[index].split(b",") if m] if len(fields) > index else []


def merge_db(name: str, old_default: bytes, host: bytes, new_default: bytes) -> bytes:
    """The host's database with what ``new_default`` added over ``old_default`` (see the
    module docstring); ``host`` unchanged when nothing was added."""
    old, mine, new = entries(old_default), entries(host), entries(new_default)
    index = MEMBERS_FIELD.get(name)
    lines = []
    for line in host.splitlines():
        key = line.split(b":", 1)[0]
        if index is not None and key in new and b":" in line:
            gained = [m for m in members(new[key], index) if m not in members(old.get(key),
                                                                                 index)]
            line = with_members(line, gained, index) if gained else line
        lines.append(line)
    lines += [line for key, line in new.items() if key not in old and key not in mine]
    return b"".join(line + b"\n" for line in lines)


def merge_user_db(old_usr_etc: Path, old_etc: Path, new_etc: Path) -> list[str]:
    """Rewrite the user database files of ``new_etc`` as :func:`merge_db` says; the file keeps
    the host's mode and owner.  Returns the files written."""
    written = []
    for name in USER_DB:
        host = read_regular(old_etc / name)
        if host is None:
            continue
        merged = merge_db(name, read_regular(old_usr_etc / name) or b"", host,
                          read_regular(new_etc / name) or b"")
        if read_regular(new_etc / name) == merged:
            continue
        st = os.lstat(old_etc / name)
        atomic_write(new_etc / name, merged, mode=stat.S_IMODE(st.st_mode))
        os.chown(new_etc / name, st.st_uid, st.st_gid, follow_symlinks=False)
        written.append(name)
    return written


def is_host_file(rel: str) -> bool:
    """Whether ``rel`` (relative to /etc) is host state merged by rule, never a conflict."""
    return rel in USER_DB or any(fnmatch.fnmatchcase(rel, p) for p in IDENTITY)


def identity_files(etc: Path) -> Iterator[str]:
    """The identity files (relative paths) ``etc`` holds as regular files."""
    for pattern in IDENTITY:
        parent, _, glob = pattern.rpartition("/")
        d = etc / parent if parent else etc
        if not d.is_dir() or d.is_symlink():
            continue
        for name in sorted(os.listdir(d)):
            rel = f"{parent}/{name}" if parent else name
            if fnmatch.fnmatchcase(name, glob) and stat.S_ISREG(os.lstat(etc / rel).st_mode):
                yield rel
