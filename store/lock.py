"""Advisory ``flock`` locks for repositories and sysroots."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from store.errors import LockedError


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str], *, exclusive: bool, wait: float = 0.0, what: str = ""
) -> Iterator[None]:
    """Hold a shared or exclusive flock on ``path`` for the duration of the block.

    Waits up to ``wait`` seconds, then raises :class:`LockedError` naming ``what``.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"{what or path} is locked by another strata process; retry when it is done"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
