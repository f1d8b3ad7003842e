"""The Deployment record and the names OSTree gives its pieces.

On disk, for a deployment of commit CSUM in STATEROOT::

    ostree/deploy/STATEROOT/deploy/CSUM.SERIAL          the tree (hardlinked from the repo)
    ostree/deploy/STATEROOT/deploy/CSUM.SERIAL.origin   its .origin keyfile
    ostree/boot.BV.SBV/STATEROOT/BOOTCSUM/BOOTSERIAL
                                   -> ../../../deploy/STATEROOT/deploy/CSUM.SERIAL
    boot/ostree/STATEROOT-BOOTCSUM/vmlinuz-KVER         its kernel (shared by equal kernels)

SERIAL counts deployments of the same commit; BOOTSERIAL counts deployments
with the same kernel, in boot order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from boot.errors import SysrootError
from boot.kargs import Kargs
from boot.origin import Origin

_DIRNAME = re.compile(r"^([0-9a-f]{64})\.([0-9]+)$")
BOOTLINK = re.compile(r"^/ostree/boot\.([01])/([^/]+)/([0-9a-f]{64})/([0-9]+)$")


@dataclass(frozen=True)
class Deployment:
    """One deployment as listed by the boot entries (index 0 = default)."""

    stateroot: str
    checksum: str
    deployserial: int
    bootcsum: str
    bootserial: int = 0
    index: int = 0
    kargs: Kargs = Kargs()
    origin: Origin = field(default_factory=Origin)

    @property
    def dirname(self) -> str:
        return f"{self.checksum}.{self.deployserial}"

    @property
    def pinned(self) -> bool:
        return self.origin.pinned

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity of the deployment on disk, independent of its place in the list."""
        return (self.stateroot, self.checksum, self.deployserial)

    def same(self, other: Deployment | None) -> bool:
        """True when both name the same deployment directory."""
        return other is not None and self.key == other.key


def parse_dirname(name: str) -> tuple[str, int]:
    """``CSUM.SERIAL`` -> (csum, serial); SysrootError otherwise."""
    m = _DIRNAME.match(name)
    if not m:
        raise SysrootError(f"not a deployment directory name: {name!r}")
    return m.group(1), int(m.group(2))


def bootlink_path(bootversion: int, d: Deployment) -> str:
    """The ``ostree=`` value that selects ``d`` under boot version ``bootversion``."""
    return f"/ostree/boot.{bootversion}/{d.stateroot}/{d.bootcsum}/{d.bootserial}"


def bootlink_target(d: Deployment) -> str:
    """Where a bootlink points, relative to ``ostree/boot.BV.SBV/STATEROOT/BOOTCSUM``."""
    return f"../../../deploy/{d.stateroot}/deploy/{d.dirname}"
