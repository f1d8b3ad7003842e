"""What packages a commit holds, from its own database, and how two commits differ."""

from __future__ import annotations

from dataclasses import dataclass

from importers import read_installed
from importers.model import PackageMeta, PackageType
from importers.versions import evrcmp
from layering.errors import ComposeError
from store.repo import Repo


@dataclass(frozen=True)
class DbDiff:
    """Packages added, removed, upgraded and downgraded from commit A to commit B."""

    added: tuple[PackageMeta, ...]
    removed: tuple[PackageMeta, ...]
    upgraded: tuple[tuple[PackageMeta, PackageMeta], ...]
    downgraded: tuple[tuple[PackageMeta, PackageMeta], ...]

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        def one(p: PackageMeta) -> dict[str, str]:
            return {"name": p.name, "evr": p.evr, "arch": p.arch}

        def pair(a: PackageMeta, b: PackageMeta) -> dict[str, str]:
            return {"name": a.name, "arch": b.arch, "from": a.evr, "to": b.evr}

        return {"added": [one(p) for p in self.added], "removed": [one(p) for p in self.removed],
                "upgraded": [pair(a, b) for a, b in self.upgraded],
                "downgraded": [pair(a, b) for a, b in self.downgraded]}


def packages(repo: Repo, rev: str) -> tuple[PackageType, list[PackageMeta]]:
    """The packages recorded in commit ``rev``'s package database."""
    kind, pkgs = read_installed(repo, repo.resolve(rev), with_files=False)
    if kind is None:
        raise ComposeError(f"commit {rev} has no package database")
    return kind, pkgs


def diff(repo: Repo, a: str, b: str) -> DbDiff:
    """Compare the package databases of two commits by name and architecture."""
    kind, left = packages(repo, a)
    _kind, right = packages(repo, b)
    la = {(p.name, p.arch): p for p in left}
    rb = {(p.name, p.arch): p for p in right}
    up, down = [], []
    for key in sorted(la.keys() & rb.keys()):
        c = evrcmp(kind, la[key].evr, rb[key].evr)
        if c < 0:
            up.append((la[key], rb[key]))
        elif c > 0:
            down.append((la[key], rb[key]))
    return DbDiff(added=tuple(rb[k] for k in sorted(rb.keys() - la.keys())),
                  removed=tuple(la[k] for k in sorted(la.keys() - rb.keys())),
                  upgraded=tuple(up), downgraded=tuple(down))
