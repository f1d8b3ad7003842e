"""``strata run``: a command in a commit's or a deployment's tree, without deploying it.

The tree is a hardlink checkout (the repository's kept one when it is free, see
:mod:`store.checkoutcache`, else a fresh one in the run's scratch directory) or
a deployment's directory; its files are the stored objects themselves, so
nothing of it may be writable.  bubblewrap builds the root as an empty tmpfs,
binds each top-level directory of the tree into it read-only, recreates its
top-level symlinks, and then makes the root read-only as well:

    /            tmpfs, read-only at the end
    /usr, ...    the tree's directories, read-only binds
    /etc         a throwaway copy (``cp -a``) of the tree's ``usr/etc`` (a commit)
                 or of the deployment's own merged ``/etc``, in the scratch dir
    /var /tmp /run   empty tmpfs
    /proc /dev   new ones

A file below a read-only bind cannot be linked into ``/etc`` either (another
mount: EXDEV), so no write reaches an object.  The command runs in new user,
mount, pid, ipc, uts, cgroup and (unless ``network``) net namespaces as uid 0
mapped to nothing but root, every capability dropped, ``no_new_privs``, in a
new session (no TIOCSTI into the caller's terminal), with a clean environment;
it dies with strata.  Unlike maintainer scripts (:mod:`layering.scripts`) it
does not need a real ``chown``, so the user namespace costs nothing here and
takes away what real root could still do.  The scratch directory
(``tmp/scripts-*``) is locked while it is used, so a repository's next open
removes one a killed run left.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from boot.sysroot import Sysroot
from layering.scripts import BASE_ENV, locked_scratch
from store import beneath
from store.checkoutcache import CheckoutCache
from store.errors import ToolError
from store.repo import Repo
from store.run import run, run_attached

DEPLOYMENT_PREFIX = "deployment:"
SANDBOX_OWN = ("etc", "var", "tmp", "run", "proc", "dev", "sys")  # never taken from the tree
MAX_SYMLINKS = 40  # hops when looking for the command, as the kernel allows


class RunError(ToolError):
    """The tree cannot be prepared or the sandbox cannot start."""


class CommandNotFound(RunError):
    """The command is not in the tree (the shell's status for it)."""

    exit_code = 127


@dataclass(frozen=True)
class RunRequest:
    """What ``strata run`` was asked: the tree, the command and its surroundings."""

    ref: str
    command: tuple[str, ...]
    binds: tuple[tuple[str, str], ...] = ()
    network: bool = False


def parse_bind(spec: str) -> tuple[str, str]:
    """``SRC:DEST`` as an absolute host path and an absolute path in the sandbox."""
    src, sep, dest = spec.partition(":")
    if not sep or not src or not dest.startswith("/") or "\0" in spec:
        raise RunError(f"bind {spec!r} is not SRC:/DEST")
    if not os.path.exists(src):
        raise RunError(f"bind source {src} does not exist")
    return os.path.abspath(src), os.path.normpath(dest)


def run_command(repo: Repo, sysroot: Sysroot, request: RunRequest) -> int:
    """Run ``request.command`` in the sandbox and return its exit status.

    Raises RunError (nothing run) when the tree or a bind cannot be prepared, and
    CommandNotFound when the command is in neither the tree nor a bind.  The scratch
    directory and the checkout made for the run are gone when this returns or raises;
    the stored objects, the kept checkout and the deployment are unchanged.
    """
    with locked_scratch(repo) as scratch, _tree(repo, sysroot, request.ref, scratch) as root:
        tree, etc = root
        _check_command(tree, etc, request)
        return run_attached(_bwrap_argv(tree, etc, request))


@contextlib.contextmanager
def _tree(repo: Repo, sysroot: Sysroot, ref: str,
          scratch: Path) -> Iterator[tuple[Path, Path | None]]:
    """The tree to run in and the throwaway ``/etc`` copied into ``scratch``."""
    if ref.startswith(DEPLOYMENT_PREFIX):
        with sysroot.lock():  # no clean-up removes it while /etc is copied
            tree = _deployment_dir(sysroot, ref[len(DEPLOYMENT_PREFIX):])
            etc = _copy_etc(tree, ("etc",), scratch)
        yield tree, etc
        return
    commit = repo.load_commit(repo.resolve(ref))
    with contextlib.ExitStack() as stack:
        with repo.lock(exclusive=False):  # no prune while the checkout is made
            tree = stack.enter_context(CheckoutCache(repo).lease(
                (commit.root_tree, commit.root_meta), scratch))
        yield tree, _copy_etc(tree, ("usr/etc", "etc"), scratch)


def _deployment_dir(sysroot: Sysroot, which: str) -> Path:
    """The directory of deployment ``which``: an index as ``status`` numbers them,
    ``default`` (0) or ``booted``."""
    state = sysroot.load()
    if which == "booted":
        found = state.booted
    elif which == "default" or which.isdigit():
        index = 0 if which == "default" else int(which)
        found = next((d for d in state.deployments if d.index == index), None)
    else:
        raise RunError(f"deployment {which!r} is not an index, 'default' or 'booted'")
    if found is None:
        raise RunError(f"no deployment {which} in sysroot {sysroot.path}")
    return sysroot.deployment_dir(found)


def _copy_etc(tree: Path, candidates: tuple[str, ...], scratch: Path) -> Path | None:
    """A copy (owners, modes, xattrs, symlinks as symlinks) of the first candidate that is
    a directory reached without a symlink, or None when the tree has none."""
    for rel in candidates:
        if beneath.is_real_dir(tree, rel):
            run(["cp", "-a", "--", tree / rel, scratch / "etc"])
            return scratch / "etc"
    return None


def _bwrap_argv(tree: Path, etc: Path | None, request: RunRequest) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--tmpfs", "/"]
    if request.network:
        argv.append("--share-net")
    for entry in sorted(os.scandir(tree), key=lambda e: e.name):
        if entry.name in SANDBOX_OWN:
            continue
        if entry.is_symlink():
            argv += ["--symlink", os.readlink(entry.path), f"/{entry.name}"]
        elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
            argv += ["--ro-bind", entry.path, f"/{entry.name}"]
    if etc is not None:
        argv += ["--bind", str(etc), "/etc"]
    argv += ["--tmpfs", "/var", "--tmpfs", "/tmp", "--tmpfs", "/run", "--proc", "/proc",
             "--dev", "/dev"]
    for src, dest in request.binds:
        argv += ["--bind", src, dest]
    argv += ["--remount-ro", "/", "--clearenv", "--chdir", "/"]
    env = {**BASE_ENV, "TERM": os.environ.get("TERM", "dumb")}
    for k, v in env.items():
        argv += ["--setenv", k, v]
    return [*argv, "--", *request.command]


def _check_command(tree: Path, etc: Path | None, request: RunRequest) -> None:
    """CommandNotFound unless the command is a file in the sandbox as it will be (the tree,
    the ``/etc`` copy, a bind): bubblewrap would say so in a line of its own and exit 1."""
    name = request.command[0]
    dirs = [""] if "/" in name else BASE_ENV["PATH"].split(":")
    for d in dirs:
        path = os.path.normpath(os.path.join("/", d, name))
        if any(path == dest or path.startswith(dest.rstrip("/") + "/")
               for _src, dest in request.binds):
            return
        if _resolve(tree, etc, path):
            return
    raise CommandNotFound(f"command {name} not found in the tree of {request.ref}")


def _resolve(tree: Path, etc: Path | None, path: str) -> bool:
    """True when ``path`` (absolute, in the sandbox) leads to a non-directory, following
    symlinks as the sandbox would, each resolved within it."""
    parts, hops = path.strip("/").split("/"), 0
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            done = done[:-1]
            continue
        host = _host_path(tree, etc, [*done, part])
        if host is None or not os.path.lexists(host):
            return False
        if os.path.islink(host):
            hops += 1
            if hops > MAX_SYMLINKS:
                return False
            target = os.readlink(host)
            done = [] if target.startswith("/") else done
            parts = [p for p in target.split("/") if p] + parts
            continue
        done.append(part)
    host = _host_path(tree, etc, done)
    return host is not None and not os.path.isdir(host)


def _host_path(tree: Path, etc: Path | None, parts: list[str]) -> str | None:
    """Where sandbox path ``/parts...`` lies on the host (None: an empty tmpfs or absent);
    every prefix has been checked to be a directory and not a symlink."""
    if not parts:
        return str(tree)
    if parts[0] == "etc":
        return None if etc is None else os.path.join(etc, *parts[1:])
    if parts[0] in SANDBOX_OWN:
        return None
    return os.path.join(tree, *parts)
