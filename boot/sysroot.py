"""The physical sysroot: layout, current deployments, boot version, lock.

Layout (the same as ``ostree admin``)::

    SYSROOT/
      boot/loader -> loader.BV           BV in {0,1}: the active boot version
      boot/loader.BV/entries/ostree-N-STATEROOT.conf
      boot/ostree/STATEROOT-BOOTCSUM/    kernels
      ostree/repo/                       the object repository (bare)
      ostree/lock                        the sysroot lock (OFD lock, shared with ostree)
      ostree/boot.BV -> boot.BV.SBV      bootlinks to deployment dirs
      ostree/deploy/STATEROOT/{deploy,var}

The boot entries are the truth: deployments are the entries' ``ostree=``
targets ordered by ``version``, highest (the default) first.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from boot.bls import BlsEntry, version_key
from boot.deployment import BOOTLINK, Deployment, parse_dirname
from boot.errors import SysrootError
from boot.kargs import Kargs
from boot.mountns import ensure_writable
from boot.origin import Origin
from boot.staged import read_record
from store.lock import LockKind, file_lock


@dataclass(frozen=True)
class SysrootState:
    """A snapshot of the sysroot's boot configuration."""

    bootversion: int
    subbootversion: int
    deployments: tuple[Deployment, ...]
    booted: Deployment | None = None
    staged: Deployment | None = None  # written, finalized at shutdown (boot.stage); no entry yet

    @property
    def default(self) -> Deployment | None:
        return self.deployments[0] if self.deployments else None

    @property
    def next(self) -> Deployment | None:
        """What a new request builds on: the staged deployment, else the default."""
        return self.staged or self.default

    @property
    def all_deployments(self) -> tuple[Deployment, ...]:
        """The staged deployment (if any) then those of the boot entries."""
        return (self.staged, *self.deployments) if self.staged else self.deployments

    def merge_deployment(self, stateroot: str) -> Deployment | None:
        """The deployment a new one of ``stateroot`` starts from: booted if it is of
        that stateroot, else the first of it in boot order."""
        if self.booted is not None and self.booted.stateroot == stateroot:
            return self.booted
        return next((d for d in self.deployments if d.stateroot == stateroot), None)


@dataclass(frozen=True)
class Sysroot:
    """A sysroot directory; methods read it, the deploy/admin modules change it."""

    path: Path

    @property
    def repo_path(self) -> Path:
        return self.path / "ostree" / "repo"

    @property
    def boot(self) -> Path:
        return self.path / "boot"

    def stateroot_dir(self, stateroot: str) -> Path:
        return self.path / "ostree" / "deploy" / stateroot

    def deployment_dir(self, d: Deployment) -> Path:
        return self.stateroot_dir(d.stateroot) / "deploy" / d.dirname

    def origin_path(self, d: Deployment) -> Path:
        return self.stateroot_dir(d.stateroot) / "deploy" / f"{d.dirname}.origin"

    def stateroots(self) -> list[str]:
        """Names of the initialized stateroots (``ostree/deploy/*``)."""
        base = self.path / "ostree" / "deploy"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def bootversion(self) -> int:
        """0 or 1 from ``boot/loader``; 0 when there is no loader link yet."""
        try:
            target = os.readlink(self.boot / "loader")
        except FileNotFoundError:
            return 0
        if target not in ("loader.0", "loader.1"):
            raise SysrootError(f"unexpected boot/loader target {target!r} in {self.path}")
        return int(target[-1])

    def subbootversion(self, bootversion: int) -> int:
        """1 when ``ostree/boot.BV`` points at ``boot.BV.1``, else 0 (as ostree reads it)."""
        try:
            target = os.readlink(self.path / "ostree" / f"boot.{bootversion}")
        except FileNotFoundError:
            return 0
        return 1 if target.endswith(".1") else 0

    def read_entries(self, bootversion: int) -> list[tuple[Path, BlsEntry]]:
        """The BLS entries of ``loader.BV`` in boot order (highest version first)."""
        edir = self.boot / f"loader.{bootversion}" / "entries"
        if not edir.is_dir():
            if os.path.lexists(self.boot / "loader"):
                raise SysrootError(f"boot/loader points at a missing {edir}")
            return []
        entries = [(p, BlsEntry.parse(p.read_text(), source=str(p)))
                   for p in sorted(edir.glob("*.conf"))]
        return sorted(entries, key=lambda pe: version_key(pe[1]), reverse=True)

    def read_origin(self, stateroot: str, dirname: str) -> Origin:
        """The origin beside deployment ``dirname``; empty when the file is absent."""
        p = self.stateroot_dir(stateroot) / "deploy" / f"{dirname}.origin"
        try:
            return Origin.parse(p.read_text(), source=str(p))
        except FileNotFoundError:
            return Origin()

    def _deployment_of(self, path: Path, entry: BlsEntry, index: int) -> Deployment:
        kargs = Kargs.parse(entry.get("options") or "")
        link = kargs.get("ostree") or ""
        m = BOOTLINK.match(link)
        if not m:
            raise SysrootError(f"boot entry {path} has no valid ostree= argument: {link!r}")
        _, stateroot, bootcsum, bootserial = m.groups()
        try:
            target = os.readlink(self.path / link.lstrip("/"))
        except OSError as e:
            raise SysrootError(f"bootlink {link} of {path} does not resolve: {e}") from e
        csum, serial = parse_dirname(os.path.basename(target))
        return Deployment(stateroot, csum, serial, bootcsum, int(bootserial), index,
                          kargs, self.read_origin(stateroot, f"{csum}.{serial}"))

    def load(self) -> SysrootState:
        """Read the current deployments from the boot entries.

        A read that races with a writer's switch (the boot version changed
        under it) is retried, so readers need no lock.
        """
        if not (self.path / "ostree").is_dir():
            raise SysrootError(f"not a sysroot (no ostree/ directory): {self.path}")
        for _ in range(10):
            bv = self.bootversion()
            try:
                state = self._load(bv)
            except (SysrootError, OSError):
                if self.bootversion() == bv:
                    raise
                continue
            if self.bootversion() == bv:
                return state
        return self._load(self.bootversion())

    def _load(self, bv: int) -> SysrootState:
        entries = self.read_entries(bv)
        deps = tuple(self._deployment_of(p, e, i) for i, (p, e) in enumerate(entries))
        booted = self._booted(deps)
        return SysrootState(bv, self.subbootversion(bv), deps, booted,
                            self._staged() if booted is not None else None)

    def _staged(self) -> Deployment | None:
        """The deployment staged on this running host (its record in /run), if its tree is
        still there."""
        rec = read_record()
        if rec is None or rec.stateroot not in self.stateroots():
            return None
        dirname = f"{rec.checksum}.{rec.serial}"
        if not (self.stateroot_dir(rec.stateroot) / "deploy" / dirname).is_dir():
            return None
        return rec.deployment(self.read_origin(rec.stateroot, dirname))

    def _booted(self, deps: tuple[Deployment, ...]) -> Deployment | None:
        """On the running host: the deployment that is ``/`` (same device and inode, as
        ostree finds it; the ``ostree=`` bootlink of the command line is gone once a
        deploy switched boot versions), else the one the command line names."""
        if self.path.resolve() != Path("/"):
            return None
        root = os.stat("/")
        for d in deps:
            try:
                st = os.stat(self.deployment_dir(d))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
                return d
        try:
            cmdline = Path("/proc/cmdline").read_text()
        except OSError:
            return None
        return self.find_booted(deps, cmdline)

    def find_booted(self, deps: tuple[Deployment, ...], cmdline: str) -> Deployment | None:
        """The deployment a kernel command line's ``ostree=`` resolves to in this sysroot."""
        link = Kargs.parse(cmdline).get("ostree")
        if not link:
            return None
        real = os.path.realpath(self.path / link.lstrip("/"))
        return next((d for d in deps if os.path.realpath(self.deployment_dir(d)) == real), None)

    def lock(self, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """Hold ``ostree/lock`` exclusively (an OFD lock, as ``ostree admin`` takes it).

        Re-entrant: a process holding it passes straight in, so a command can hold
        it from reading the default deployment to deploying.  Waits up to ``wait``
        seconds (or the program's lock policy, :mod:`store.lock`), then raises
        LockedError naming the holder.  On the running host whose sysroot is mounted
        read-only, this process first gets a private writable view of it
        (:func:`boot.mountns.ensure_writable`).
        """
        ensure_writable(self.path)
        return file_lock(self.path / "ostree" / "lock", exclusive=True, wait=wait,
                         what=f"sysroot {self.path}", kind=LockKind.OFD, reentrant=True,
                         mode=0o600)

    def read_lock(self, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """Hold ``ostree/lock`` shared (an OFD read lock): no writer (:meth:`lock`, or
        ``ostree admin``) changes the sysroot meanwhile.  Needs only read access (see
        :func:`store.lock.file_lock`); waits as :meth:`lock`."""
        return file_lock(self.path / "ostree" / "lock", exclusive=False, wait=wait,
                         what=f"sysroot {self.path}", kind=LockKind.OFD, reentrant=True,
                         mode=0o600, reader=True)


def with_indices(deployments: list[Deployment]) -> list[Deployment]:
    """Renumber indices and boot serials for a new boot order."""
    out: list[Deployment] = []
    seen: dict[str, int] = {}
    for i, d in enumerate(deployments):
        out.append(replace(d, index=i, bootserial=seen.get(d.bootcsum, 0)))
        seen[d.bootcsum] = seen.get(d.bootcsum, 0) + 1
    return out
