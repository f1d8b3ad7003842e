"""dpkg's diversions, as unpacking honours them.

The database's ``diversions`` file holds three lines per diversion: the diverted
path, where it is diverted to, and the package that diverted it (``:`` for a
local diversion).  dpkg unpacks a package's file at a diverted path to the
diversion's target unless the diversion is the package's own.  Paths are
checked to be absolute, without ``.`` or ``..`` components, so a hostile
database cannot move a file anywhere :mod:`layering.assemble` would not put it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layering.errors import ComposeError
from store.mtree import MutableTree
from store.repo import Repo

PATH = re.compile(r"(/(?!\.\.?(/|$))[^/\x00\n]+)+")
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Diversion:
    """One diversion: ``/path`` goes to ``to``, unless unpacked by ``package``."""

    to: str
    package: str  # "" for a local diversion

    def applies(self, package: str) -> bool:
        """Whether a file of ``package`` at the diverted path goes to :attr:`to`."""
        return self.package != package


def read_diversions(repo: Repo, tree: MutableTree, db: str) -> dict[str, Diversion]:
    """The diversions of the database ``db`` of ``tree``, by diverted path (``/x/y``);
    raises ComposeError on a file dpkg would not have written."""
    node = tree.lookup(f"{db}/diversions")
    if not isinstance(node, str):
        return {}
    meta, stream = repo.open_file(node)
    if stream is None:
        return {}
    with stream:
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ComposeError(f"dpkg's diversions file is larger than {MAX_BYTES} bytes "
                           f"in /{db}/diversions")
    lines = data.decode("utf-8", "replace").splitlines()
    if len(lines) % 3:
        raise ComposeError(f"dpkg's diversions file is truncated in /{db}/diversions")
    out: dict[str, Diversion] = {}
    for i in range(0, len(lines), 3):
        path, to, package = lines[i:i + 3]
        if not PATH.fullmatch(path) or not PATH.fullmatch(to):
            raise ComposeError(f"invalid diversion of {path[:100]!r} to {to[:100]!r} "
                               f"in /{db}/diversions")
        out[path] = Diversion(to, "" if package == ":" else package)
    return out
