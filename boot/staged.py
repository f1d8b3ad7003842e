"""The record of a staged deployment, kept in ``/run`` until shutdown.

A staged deployment (see :mod:`boot.stage`) is a complete tree under
``ostree/deploy/STATEROOT/deploy/CSUM.SERIAL`` with its kernel copied, that
no boot entry reaches yet.  What finalizing it at shutdown needs besides the
tree is kept in one JSON file on the running host's tmpfs::

    /run/strata/staged-deployment
      {"stateroot", "checksum", "serial", "bootcsum", "kargs": [...],
       "merge": {"stateroot", "checksum", "serial"} | null}

It lives in ``/run`` on purpose: a crash or a power cut loses it, the tree
becomes unreachable and the next sysroot operation removes it as a leftover,
so nothing half-done is ever booted.  strata keeps its own file beside
ostree's ``/run/ostree/staged-deployment`` (a GVariant) so that ostree's
finalize service never finalizes a deployment strata staged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from boot.deployment import Deployment
from boot.errors import SysrootError
from boot.kargs import Kargs
from boot.origin import Origin
from store.fsutil import atomic_write

RECORD_PATH = Path("/run/strata/staged-deployment")
RECORD_MAX = 64 * 1024  # bytes read of the record (strata writes well under 4 KiB)
_KEYS = {"stateroot", "checksum", "serial", "bootcsum", "kargs", "merge", "merge_var"}
_MERGE_KEYS = {"stateroot", "checksum", "serial"}


@dataclass(frozen=True)
class StagedRecord:
    """A staged deployment's identity, kernel arguments and merge deployment."""

    stateroot: str
    checksum: str
    serial: int
    bootcsum: str
    kargs: tuple[str, ...]
    merge: tuple[str, str, int] | None  # the merge deployment's key (stateroot, csum, serial)
    merge_var: bool = False  # a layering deploy: /var files carried at finalize (boot.varcarry)

    @classmethod
    def of(cls, d: Deployment, merge: Deployment | None, merge_var: bool = False) -> StagedRecord:
        """The record of staged deployment ``d`` whose /etc merges from ``merge``."""
        return cls(d.stateroot, d.checksum, d.deployserial, d.bootcsum, tuple(d.kargs.args),
                   merge.key if merge is not None else None, merge_var)

    def deployment(self, origin: Origin) -> Deployment:
        """The staged deployment (index 0, as ostree lists it) with its origin."""
        return Deployment(self.stateroot, self.checksum, self.serial, self.bootcsum, 0, 0,
                          Kargs(self.kargs), origin)

    def to_dict(self) -> dict[str, object]:
        m = self.merge
        return {"stateroot": self.stateroot, "checksum": self.checksum, "serial": self.serial,
                "bootcsum": self.bootcsum, "kargs": list(self.kargs),
                "merge": None if m is None else {"stateroot": m[0], "checksum": m[1],
                                                 "serial": m[2]},
                "merge_var": self.merge_var}

    @classmethod
    def from_dict(cls, data: object, *, source: str) -> StagedRecord:
        """Parse a record; SysrootError naming ``source`` for anything strata did not write."""
        if not isinstance(data, dict) or set(data) != _KEYS:
            raise SysrootError(f"malformed staged deployment record {source}")
        m = data["merge"]
        if m is not None and (not isinstance(m, dict) or set(m) != _MERGE_KEYS):
            raise SysrootError(f"malformed merge deployment in {source}")
        try:
            rec = cls(_name(data["stateroot"]), _csum(data["checksum"]), _serial(data["serial"]),
                      _csum(data["bootcsum"]), _kargs(data["kargs"]),
                      None if m is None else (_name(m["stateroot"]), _csum(m["checksum"]),
                                              _serial(m["serial"])),
                      _flag(data["merge_var"]))
        except (TypeError, ValueError) as e:
            raise SysrootError(f"malformed staged deployment record {source}: {e}") from None
        return rec


def _name(v: object) -> str:
    if not isinstance(v, str) or not v or "/" in v or v.startswith("."):
        raise ValueError(f"bad stateroot {v!r}")
    return v


def _csum(v: object) -> str:
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ValueError(f"bad checksum {v!r}")
    return v


def _serial(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 31:
        raise ValueError(f"bad serial {v!r}")
    return v


def _kargs(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
        raise ValueError("kargs is not a list of strings")
    return tuple(v)


def _flag(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError("merge_var is not a boolean")
    return v


def read_record(path: Path = RECORD_PATH) -> StagedRecord | None:
    """The staged deployment record, or None when nothing is staged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SysrootError(f"cannot read staged deployment record {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(RECORD_MAX + 1)
    if len(data) > RECORD_MAX:
        raise SysrootError(f"staged deployment record {path} is larger than {RECORD_MAX} bytes")
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SysrootError(f"malformed staged deployment record {path}") from None
    return StagedRecord.from_dict(parsed, source=str(path))


def write_record(record: StagedRecord, path: Path = RECORD_PATH) -> None:
    """Replace the record atomically (a second stage replaces the first)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(record.to_dict(), sort_keys=True) + "\n").encode(),
                 sync=False, mode=0o644)


def clear_record(path: Path = RECORD_PATH) -> bool:
    """Forget the staged deployment (its tree becomes a leftover); True if there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
