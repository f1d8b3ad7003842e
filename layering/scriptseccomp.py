"""A seccomp filter for the maintainer-script sandbox: no kernel keyrings.

Scripts run as real root, and keyrings are not namespaced: uid 0's user and
session keyrings are the host root's.  As docker's default profile does, the
filter makes ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM, for
the native ABI and the compat ones (i386, x32).  The program is classic BPF
over ``struct seccomp_data`` (``nr`` at offset 0, ``arch`` at 4), in the form
``bwrap --seccomp FD`` reads.  On an architecture not listed here no filter is
made (:func:`keyring_filter` returns None).
"""

from __future__ import annotations

import platform
import struct

LD_ABS_W, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050001
X32_BIT = 0x40000000
# arch -> (audit arch, (add_key, request_key, keyctl), whether x32 numbers exist)
ABIS: dict[str, list[tuple[int, tuple[int, ...], bool]]] = {
    "x86_64": [(0xC000003E, (248, 249, 250), True), (0x40000003, (286, 287, 288), False)],
    "aarch64": [(0xC00000B7, (217, 218, 219), False), (0x40000028, (309, 310, 311), False)],
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _abi_block(audit_arch: int, numbers: tuple[int, ...], x32: bool, to_deny: int) -> list[bytes]:
    """``if arch == audit_arch`` check ``nr`` (deny when listed or x32), else fall through.
    ``to_deny`` is the distance from the end of this block to the deny instruction."""
    checks = [*([(JGE_K, X32_BIT)] if x32 else []), *((JEQ_K, n) for n in numbers)]
    body = [_insn(LD_ABS_W, 0)]
    for i, (code, k) in enumerate(checks):
        left = len(checks) - i - 1  # instructions after this one in the block
        body.append(_insn(code, k, jt=left + 1 + to_deny))  # past "ret allow", on to deny
    body.append(_insn(RET_K, RET_ALLOW))
    return [_insn(LD_ABS_W, 4), _insn(JEQ_K, audit_arch, jt=0, jf=len(body)), *body]


def keyring_filter(machine: str = "") -> bytes | None:
    """The compiled filter for ``machine`` (default: this one), or None if unknown."""
    abis = ABIS.get(machine or platform.machine())
    if abis is None:
        return None
    blocks: list[list[bytes]] = []
    to_deny = 1  # the final "ret allow" stands between the last block and deny
    for audit_arch, numbers, x32 in reversed(abis):
        block = _abi_block(audit_arch, numbers, x32, to_deny)
        blocks.insert(0, block)
        to_deny += len(block)
    program = [insn for block in blocks for insn in block]
    return b"".join([*program, _insn(RET_K, RET_ALLOW), _insn(RET_K, RET_EPERM)])
