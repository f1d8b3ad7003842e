"""Running maintainer scripts in a sandbox without touching stored objects.

The tree is checked out (hardlinks from the store, the repository's kept
checkout when it is free, see :mod:`store.checkoutcache`) as the lower layer of an
overlayfs; scripts run with bubblewrap with the overlay as ``/`` (and
``usr/etc`` at ``/etc``), no network, a time limit and a clean environment.
Whatever they change lands in the upper layer, so objects shared with other
commits are never written; afterwards only the upper layer is read back into
the tree (new and changed files, whiteouts as deletions).  Mounting the
overlay needs root, as ``rpm-ostree`` does for its scripts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from layering.errors import ScriptError
from store import beneath
from store.checkoutcache import CheckoutCache
from store.errors import CommandError
from store.fsutil import read_xattrs, scratch_dir
from store.mtree import MutableTree
from store.objects import DirMeta, FileMeta
from store.repo import Repo
from store.run import run
from store.txn import Transaction

TIMEOUT = 300.0
MOUNT_AND_EXEC = ('mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" '
                  '&& shift 4 && exec "$@"')
SANDBOX_DIRS = ("dev", "proc", "tmp", "run", "sys", "etc")
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}


@dataclass(frozen=True)
class ScriptRun:
    """One script invocation: which package, which script, with what arguments."""

    package: str
    name: str
    body: str
    interpreter: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    path: str = ""  # run this file of the tree (as dpkg runs /var/lib/dpkg/info/*) if set


@dataclass
class ScriptLog:
    """What the scripts printed, per script, for ``-v`` and for errors."""

    entries: list[tuple[str, str]] = field(default_factory=list)


def _bwrap_argv(lower: Path, merged: Path, scripts: Path, logs: Path) -> list[str]:
    argv = ["bwrap", "--bind", str(merged), "/"]
    if _real_dir(lower, "usr/etc"):  # bwrap resolves a bind's source on the host: no symlink
        argv += ["--bind", str(merged / "usr/etc"), "/etc"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
             "--ro-bind", str(scripts), "/run/strata", "--bind", str(logs), "/run/strata-logs",
             "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    for k, v in BASE_ENV.items():
        argv += ["--setenv", k, v]
    return argv + ["/bin/sh", "/run/strata/driver"]


def _real_dir(root: Path, rel: str) -> bool:
    """True when ``rel`` below ``root`` is a directory reached without any symlink."""
    fd = beneath.open_root(root)
    try:
        st = beneath.lstat(fd, rel)
    finally:
        os.close(fd)
    return st is not None and stat.S_ISDIR(st.st_mode)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def driver_script(runs: Sequence[ScriptRun], names: list[str]) -> str:
    """A shell program that runs each script in order, in a subshell with its own
    environment, keeping its output and exit status, and stops at the first failure."""
    lines = ["#!/bin/sh"]
    for r, name in zip(runs, names, strict=True):
        env = "".join(f"export {k}={_quote(v)}; " for k, v in r.env)
        cmd = " ".join(_quote(a) for a in [*r.interpreter.split(),
                                             r.path or f"/run/strata/{name}", *r.args])
        lines.append(f"( {env}exec {cmd} ) > /run/strata-logs/{name}.log 2>&1 < /dev/null")
        lines.append(f"rc=$?; echo $rc > /run/strata-logs/{name}.rc; [ $rc = 0 ] || exit 0")
    return "\n".join(lines) + "\n"


def _collect(runs: Sequence[ScriptRun], names: list[str], logs: Path, log: ScriptLog) -> None:
    for r, name in zip(runs, names, strict=True):
        rc_file = logs / f"{name}.rc"
        if not rc_file.exists():
            return
        output = (logs / f"{name}.log").read_text(errors="replace")
        log.entries.append((f"{r.package} {r.name}", output))
        rc = int(rc_file.read_text().strip() or "1")
        if rc != 0:
            tail = " | ".join(output.strip().splitlines()[-6:])
            raise ScriptError(f"{r.name} script of package {r.package} failed (exit {rc}): {tail}")


def _run_all(lower: Path, upper: Path, work: Path, merged: Path, scripts: Path, logs: Path,
             runs: Sequence[ScriptRun], log: ScriptLog, timeout: float) -> None:
    names = [f"{i:03d}-{r.package}.{r.name}".replace("%", "") for i, r in enumerate(runs)]
    for r, name in zip(runs, names, strict=True):
        (scripts / name).write_text(r.body)
        (scripts / name).chmod(0o755)
    (scripts / "driver").write_text(driver_script(runs, names))
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", MOUNT_AND_EXEC,
            "sh", str(lower), str(upper), str(work), str(merged),
            *_bwrap_argv(lower, merged, scripts, logs)]
    try:
        proc = run(argv, check=False, timeout=timeout * len(runs))
    except CommandError as e:
        _collect(runs, names, logs, log)
        raise ScriptError(f"maintainer scripts timed out after {timeout * len(runs):.0f}s") from e
    _collect(runs, names, logs, log)
    if proc.returncode != 0 or len(log.entries) != len(runs):
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise ScriptError(f"the script sandbox failed (exit {proc.returncode}): {err[-400:]}")


def run_scripts(repo: Repo, txn: Transaction, tree: MutableTree, runs: Sequence[ScriptRun], *,
                timeout: float = TIMEOUT, checkouts: CheckoutCache | None = None) -> ScriptLog:
    """Run ``runs`` in order over ``tree`` and fold their changes back into it.

    The overlay's lower layer is the repository's kept checkout (``checkouts``),
    brought to the tree, or a fresh checkout when it is in use.
    """
    log = ScriptLog()
    if not runs:
        return log
    if os.geteuid() != 0:
        raise ScriptError("running maintainer scripts needs root (an overlay mount); "
                          "run as root or pass --no-scripts")
    root = tree.write(txn)
    checkouts = checkouts or CheckoutCache(repo)
    with scratch_dir(repo.tmp_dir, "scripts-") as scratch, checkouts.lease(root, scratch) as lower:
        upper, work, merged, scripts, logs = (
            scratch / n for n in ("upper", "work", "merged", "scripts", "logs"))
        for d in (upper, work, merged, scripts, logs):
            d.mkdir()
        _run_all(lower, upper, work, merged, scripts, logs, runs, log, timeout)
        apply_upper(txn, tree, upper, lower)
    return log


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattrs(path: str) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(kv for kv in read_xattrs(path) if not kv[0].startswith(b"trusted.overlay."))


def apply_upper(txn: Transaction, tree: MutableTree, upper: Path, lower: Path) -> None:
    """Fold an overlayfs upper layer into ``tree``: changed files, new files, deletions."""
    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(path)
            if _is_whiteout(st):
                tree.remove(rel)
            elif stat.S_ISDIR(st.st_mode):
                _apply_dir(tree, rel, path, st, lower)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                if isinstance(tree.lookup(rel), MutableTree):
                    tree.remove(rel)
                target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
                meta = FileMeta(st.st_uid, st.st_gid, st.st_mode, target, _xattrs(path))
                tree.set_file(rel, txn.write_file_from_path(path, meta))


def _apply_dir(tree: MutableTree, rel: str, path: str, st: os.stat_result, lower: Path) -> None:
    meta = DirMeta(st.st_uid, st.st_gid, st.st_mode, _xattrs(path))
    existing = tree.lookup(rel)
    if rel in SANDBOX_DIRS and existing is None and not os.listdir(path):
        return
    opaque = b"trusted.overlay.opaque" in dict(read_xattrs(path))
    if isinstance(existing, str) or (opaque and existing is not None):
        tree.remove(rel)
        existing = None
    if existing is None:
        tree.ensure_dir(rel, meta)
    elif existing.meta != meta and os.path.isdir(lower / rel):
        existing.meta = meta
