"""One hardlink checkout kept in a bare repository's ``tmp/`` and reused.

Successive trees differ little (a base and the same base plus packages, one
compose and the next), so the checkout kept in ``tmp/checkout`` is brought to
the wanted tree by :func:`store.checkout.sync_checkout`, which touches only the
entries that differ.  ``tmp/checkout.state`` names the tree it holds and is
removed while it changes, so an update that was interrupted is rebuilt from
scratch next time.  Two users: the read-only lower layer of the maintainer
script sandbox (:meth:`CheckoutCache.lease`), and a new deployment, which takes
the checkout away instead of making its own (:meth:`CheckoutCache.take`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from store.checkout import checkout_tree, sync_checkout
from store.errors import LockedError, ToolError
from store.faults import fail_point
from store.fsutil import atomic_write, rmtree
from store.lock import file_lock
from store.repo import Repo, RepoMode
from store.run import die_with_parent, start

Root = tuple[str, str]


class CheckoutCache:
    """The kept checkout of one repository (bare mode only; other modes never keep one)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.path = repo.tmp_dir / "checkout"
        self._state = repo.tmp_dir / "checkout.state"
        self._lock = repo.tmp_dir / "checkout.lock"
        self._preparing: subprocess.Popen[bytes] | None = None

    @property
    def usable(self) -> bool:
        return self.repo.mode is RepoMode.BARE

    def holds(self) -> Root | None:
        """The tree the kept checkout holds, or None when there is none (or it is changing)."""
        try:
            parts = tuple(self._state.read_text().split())
        except OSError:
            return None
        return (parts[0], parts[1]) if len(parts) == 2 and self.path.is_dir() else None

    def prepare(self, root: Root) -> None:
        """Start checking out ``root`` in a background process when nothing is kept yet.

        Speculative: a spare core makes the checkout a later :meth:`lease` or
        :meth:`take` needs (a process at low priority, not a thread: it takes no
        time from the caller's threads; it dies with the caller).  A checkout
        already kept, of any tree, is left alone, since bringing it to the final
        tree is cheaper.  Failures are ignored; the checkout is then made when it
        is needed.
        """
        if not self.usable or self._preparing is not None or self.holds() is not None:
            return
        with contextlib.suppress(ToolError):
            self._preparing = start([sys.executable, "-m", "store.checkoutcache",
                                     self.repo.path, *root, str(os.getpid())])

    def wait(self) -> None:
        """Wait for :meth:`prepare`'s process, if one runs."""
        if self._preparing is not None:
            self._preparing.wait()
            self._preparing = None

    def cancel(self) -> None:
        """Stop :meth:`prepare`'s process if it still runs (nothing is kept then)."""
        if self._preparing is not None:
            if self._preparing.poll() is None:
                self._preparing.terminate()
            self.wait()

    @contextlib.contextmanager
    def lease(self, root: Root, scratch: Path) -> Iterator[Path]:
        """A read-only checkout of ``root`` for the duration of the block.

        The kept one when it can be had (it must not be written: it still names
        ``root`` afterwards), else a fresh checkout in ``scratch/lower``.
        """
        self.wait()
        held, kept = contextlib.ExitStack(), False
        if self.usable:
            with contextlib.suppress(LockedError):
                held.enter_context(file_lock(self._lock, exclusive=True))
                kept = True
        if not kept:
            checkout_tree(self.repo, *root, scratch / "lower")
            yield scratch / "lower"
            return
        with held:
            self._bring_to(self.repo, root)
            try:
                yield self.path
            finally:
                self._record(root)

    def take(self, root: Root, dest: Path) -> bool:
        """Move the kept checkout, brought to ``root``, to ``dest`` (absent, same filesystem).

        Returns False, changing nothing at ``dest``, when there is no kept checkout
        or it is in use; the caller then checks out on its own.
        """
        self.wait()
        if not self.usable or self.holds() is None:
            return False
        try:
            with file_lock(self._lock, exclusive=True):
                old = self.holds()
                if old is None:
                    return False
                self._state.unlink()
                try:
                    sync_checkout(self.repo, self.path, old, root)
                    fail_point("checkout-cache-take")
                    os.rename(self.path, dest)
                except (ToolError, OSError):
                    rmtree(self.path)
                    return False
                return True
        except LockedError:
            return False

    def drop(self) -> None:
        """Remove the kept checkout, unless it is in use."""
        with contextlib.suppress(LockedError), file_lock(self._lock, exclusive=True):
            self._state.unlink(missing_ok=True)
            rmtree(self.path)

    def prepare_here(self, root: Root) -> None:
        """What :meth:`prepare`'s process does: bring the kept checkout to ``root``."""
        with file_lock(self._lock, exclusive=True), self.repo.lock(exclusive=False):
            self._bring_to(self.repo, root)
            self._record(root)

    def _record(self, root: Root) -> None:
        atomic_write(self._state, f"{root[0]} {root[1]}\n".encode(), sync=False)

    def _bring_to(self, repo: Repo, root: Root) -> None:
        old = self.holds()
        self._state.unlink(missing_ok=True)
        if old is not None:
            try:
                sync_checkout(repo, self.path, old, root)
                return
            except (ToolError, OSError):
                pass
        rmtree(self.path)
        checkout_tree(repo, *root, self.path)


if __name__ == "__main__":  # prepare's background process; a failure leaves nothing kept
    die_with_parent(int(sys.argv[4]))
    os.nice(10)
    CheckoutCache(Repo.open(sys.argv[1], clean=False)).prepare_here((sys.argv[2], sys.argv[3]))
