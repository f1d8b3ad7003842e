"""File capabilities: rpm's text form (``cap_net_raw=ep``) to the ``security.capability`` xattr.

The xattr is ``struct vfs_cap_data`` revision 2, little-endian::

    u32 magic_etc   0x02000000 | 0x1 when the effective bit is set
    u32 permitted[0], u32 inheritable[0], u32 permitted[1], u32 inheritable[1]

Text clauses follow libcap's ``cap_from_text``: ``NAMES OP FLAGS`` repeated,
NAMES a comma list (empty or ``all`` meaning every capability), OP one of
``= + -``, FLAGS from ``e i p``.
"""

from __future__ import annotations

import re
import struct

from importers.errors import PackageFormatError

XATTR = b"security.capability"
_REVISION_2 = 0x02000000
_EFFECTIVE = 0x1
NAMES = (
    "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap "
    "linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner "
    "sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice "
    "sys_resource sys_time sys_tty_config mknod lease audit_write audit_control setfcap "
    "mac_override mac_admin syslog wake_alarm block_suspend audit_read perfmon bpf "
    "checkpoint_restore").split()
_CLAUSE = re.compile(r"([a-z_0-9,]*)((?:[=+-][eip]*)+)")


def caps_xattr(text: str, *, where: str = "") -> bytes:
    """The ``security.capability`` value for a capability text; empty text gives b""."""
    text = text.strip()
    if not text:
        return b""
    sets = {"e": 0, "i": 0, "p": 0}
    for clause in text.lower().split():
        m = _CLAUSE.fullmatch(clause)
        if m is None:
            raise PackageFormatError(f"bad capability text '{text}' {where}".strip())
        mask = _mask(m.group(1), text, where)
        for op, flags in re.findall(r"([=+-])([eip]*)", m.group(2)):
            _apply(sets, op, flags, mask)
    if sets["e"] & ~(sets["p"] | sets["i"]):
        raise PackageFormatError(f"effective capabilities not permitted in '{text}' {where}"
                                 .strip())
    magic = _REVISION_2 | (_EFFECTIVE if sets["e"] else 0)
    p, i = sets["p"], sets["i"]
    return struct.pack("<5I", magic, p & 0xFFFFFFFF, i & 0xFFFFFFFF, p >> 32, i >> 32)


def _mask(names: str, text: str, where: str) -> int:
    if names in ("", "all"):
        return (1 << len(NAMES)) - 1
    mask = 0
    for name in names.split(","):
        short = name.removeprefix("cap_")
        if short not in NAMES:
            raise PackageFormatError(f"unknown capability '{name}' in '{text}' {where}".strip())
        mask |= 1 << NAMES.index(short)
    return mask


def _apply(sets: dict[str, int], op: str, flags: str, mask: int) -> None:
    if op == "=":
        for k in sets:
            sets[k] &= ~mask
    for f in flags:
        sets[f] = sets[f] & ~mask if op == "-" else sets[f] | mask
