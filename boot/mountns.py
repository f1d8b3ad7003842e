"""A private writable view of a read-only sysroot, as ``ostree admin`` makes one.

On a booted host configured with ostree's ``sysroot.readonly=true``,
``ostree-prepare-root`` leaves ``/sysroot`` as a read-only bind mount (the
filesystem itself stays writable: ``/etc`` and ``/var`` are writable binds
of it).  ostree's admin commands then ``unshare(CLONE_NEWNS)`` and remount
``/sysroot`` writable in their own mount namespace only.  strata does the same
for the sysroot of the running host (``--sysroot`` resolving to ``/``): when the
mount holding its ``ostree/`` or ``boot/`` is read-only, this process moves to
a new mount namespace (made a slave of the old one, so nothing it mounts goes
back) and bind-remounts that mount read-write there.  The caller's mounts, the
host's and every other process's, keep their read-only flag.

A filesystem mounted read-only as a whole (its superblock) is never made
writable: that would change it for everyone; strata then fails with EROFS as
any writer would.  The namespace belongs to the calling thread and the threads
it starts afterwards, so this runs in the main thread before any worker starts
(it is called when the sysroot lock is taken).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

from boot.errors import SysrootError

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME = 32, 256, 1024, 2048
MS_BIND, MS_REC, MS_SLAVE = 4096, 16384, 1 << 19
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
_KEEP = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
         "nosymfollow": MS_NOSYMFOLLOW, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
         "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
_private: list[bool] = []  # this process already moved to its own namespace


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``: where, its per-mount and superblock options."""

    point: str
    options: tuple[str, ...]
    super_options: tuple[str, ...]

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[Mount]:
    """This process's mounts, in mount order (a later one over the same point hides earlier)."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            head, sep, tail = line.rstrip("\n").partition(" - ")
            fields, rest = head.split(" "), tail.split(" ")
            if not sep or len(fields) < 6 or len(rest) < 3:
                continue
            out.append(Mount(_unescape(fields[4]), tuple(fields[5].split(",")),
                             tuple(rest[2].split(","))))
    return out


def mount_of(path: Path) -> Mount:
    """The mount a path (resolved) lives on: the last mounted with the longest matching point."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts():
        p = m.point
        if real == p or real.startswith(p.rstrip("/") + "/"):
            if best is None or len(p) >= len(best.point):
                best = m
    if best is None:
        raise SysrootError(f"no mount holds {real}")
    return best


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SysrootError(f"{what}: {os.strerror(err)}")


def _enter_private_namespace() -> None:
    """Move this process (thread) to a new mount namespace whose mounts never propagate back."""
    if _private:
        return
    _check(_libc.unshare(CLONE_NEWNS), "unshare a mount namespace for the read-only sysroot")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None),
           "make the private mount namespace a slave")
    _private.append(True)


def _remount_writable(m: Mount) -> None:
    if "ro" in m.super_options:
        raise SysrootError(f"the filesystem at {m.point} is mounted read-only as a whole; "
                           "strata makes only a read-only bind mount writable (privately)")
    flags = MS_REMOUNT | MS_BIND
    for opt in m.options:
        flags |= _KEEP.get(opt, 0)
    point = os.fsencode(m.point)
    _check(_libc.mount(point, point, None, flags, None),
           f"remount {m.point} writable in a private mount namespace")


def ensure_writable(sysroot: Path) -> bool:
    """Make the running host's sysroot writable for this process only, when it is mounted
    read-only (see the module text); True when a remount was needed.  Any other sysroot
    path is left as it is (a read-only mount there is the user's choice)."""
    if Path(sysroot).resolve() != Path("/"):
        return False
    targets = {}
    for sub in ("ostree", "boot"):
        p = Path(sysroot) / sub
        if p.exists():
            m = mount_of(p)
            if m.readonly:
                targets[m.point] = m
    if not targets:
        return False
    _enter_private_namespace()
    for point in targets:
        m = mount_of(Path(point))  # as seen in the new namespace
        if m.readonly:
            _remount_writable(m)
    return True
