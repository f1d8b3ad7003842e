"""Client-side resolution with libsolv: base image + sources + request -> packages to add/remove.

The installed repo is the base image's own package database; its packages
are locked (an image's base is not upgraded by layering), except those the
request removes or replaces and, on Debian, those apt would upgrade because an
added package needs a newer version (:mod:`layering.aptpolicy`).  Available repos
are the sources and local package files.  Debian or RPM semantics follow the image's database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import solv

from importers.aptsource import IndexFile
from importers.errors import RepoMetadataError
from importers.model import CNF, DepKind, Op, PackageMeta, PackageType, Relation
from layering import indexcache
from layering.aptpolicy import AptMarker
from layering.errors import DepsolveError

_FLAGS = {Op.LT: solv.REL_LT, Op.LE: solv.REL_LT | solv.REL_EQ, Op.EQ: solv.REL_EQ,
          Op.GE: solv.REL_GT | solv.REL_EQ, Op.GT: solv.REL_GT}
_DEP_KEYS = {
    DepKind.PRE_DEPENDS: solv.SOLVABLE_REQUIRES, DepKind.DEPENDS: solv.SOLVABLE_REQUIRES,
    DepKind.RECOMMENDS: solv.SOLVABLE_RECOMMENDS, DepKind.SUGGESTS: solv.SOLVABLE_SUGGESTS,
    DepKind.SUPPLEMENTS: solv.SOLVABLE_SUPPLEMENTS, DepKind.ENHANCES: solv.SOLVABLE_ENHANCES,
    DepKind.CONFLICTS: solv.SOLVABLE_CONFLICTS, DepKind.BREAKS: solv.SOLVABLE_CONFLICTS,
    DepKind.PROVIDES: solv.SOLVABLE_PROVIDES, DepKind.OBSOLETES: solv.SOLVABLE_OBSOLETES,
}
LOCAL_REPO = "local files"
_PLAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")


@dataclass(frozen=True)
class Request:
    """What the user asked for."""

    install: tuple[str, ...] = ()
    install_local: tuple[PackageMeta, ...] = ()
    remove: tuple[str, ...] = ()
    replace_local: tuple[PackageMeta, ...] = ()
    no_recommends: bool = False


@dataclass(frozen=True)
class Resolution:
    """The transaction: packages added (with where they come from) and base packages removed."""

    kind: PackageType
    install: tuple[PackageMeta, ...] = ()
    remove: tuple[PackageMeta, ...] = ()
    source_of: Mapping[str, str] = field(default_factory=dict)
    satisfied_by_base: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.install and not self.remove


def _dep_id(pool: solv.Pool, rel: Relation, kind: PackageType) -> int:
    if kind is PackageType.RPM and rel.name.startswith("("):
        return pool.parserpmrichdep(rel.name)
    name = pool.str2id(rel.name)
    if rel.op is None:
        return name
    return pool.rel2id(name, pool.str2id(rel.version), _FLAGS[rel.op])


def _group_id(pool: solv.Pool, group: tuple[Relation, ...], kind: PackageType) -> int:
    ids = [_dep_id(pool, r, kind) for r in group]
    dep = ids[0]
    for other in ids[1:]:
        dep = pool.rel2id(dep, other, solv.REL_OR)
    return dep


class Universe:
    """A libsolv pool holding the installed packages and every available one."""

    def __init__(self, kind: PackageType, arch: str) -> None:
        self.kind = kind
        self.pool = solv.Pool()
        disttype = solv.Pool.DISTTYPE_DEB if kind is PackageType.DEB else solv.Pool.DISTTYPE_RPM
        if self.pool.setdisttype(disttype) < 0:
            raise DepsolveError("libsolv was built without Debian support; reinstall solv "
                                "with CMAKE_ARGS='-DMULTI_SEMANTICS=ON -DENABLE_DEBIAN=ON'")
        self.arch = arch or ("amd64" if kind is PackageType.DEB else "x86_64")
        self.pool.setarch(self.arch)
        self.meta: dict[int, PackageMeta] = {}
        self.repo_name: dict[int, str] = {}
        self.installed = self.pool.add_repo("@System")
        self.pool.installed = self.installed
        self._file_deps: set[str] = set()
        self._pending: list[tuple[solv.XSolvable, PackageMeta]] = []
        self.native: dict[int, tuple[IndexFile, dict[tuple[str, str, str], str]]] = {}
        self._dep_fields: dict[str, dict[str, str]] = {}
        self._tmp_dir = Path("/tmp")
        self._also: tuple[Path, ...] = ()

    def add_deb_index(self, repo_name: str, index: IndexFile, tmp_dir: Path,
                      also: tuple[Path, ...] = ()) -> None:
        """Load an apt ``Packages`` index with libsolv's own parser, through the cache of
        :mod:`layering.indexcache` (records are built only for the packages picked), written
        under ``tmp_dir`` and also read from the solv directories ``also``."""
        repo = self.pool.add_repo(repo_name)
        self._tmp_dir, self._also = tmp_dir, also
        table = indexcache.load(repo, index, tmp_dir, also)
        for s in repo.solvables:
            self.native[s.id] = (index, table)
            self.repo_name[s.id] = repo_name

    def dep_fields(self, s: solv.XSolvable) -> tuple[str, ...] | None:
        """Pre-Depends, Depends and Recommends of a solvable loaded natively, as its index
        writes them (in their order); None for other solvables (their order is kept)."""
        if s.id not in self.native:
            return None
        index = self.native[s.id][0]
        fields = self._dep_fields.get(index.url)
        if fields is None:
            fields = self._dep_fields[index.url] = indexcache.load_dep_fields(
                index, self._tmp_dir, self._also)
        line = fields.get(f"{s.name}\t{s.evr}\t{s.arch}")
        return tuple(line.split("\t")) if line is not None else None

    def fill_records(self, solvables: Iterable[solv.XSolvable]) -> None:
        """Build records for solvables loaded natively, from their index's table."""
        for s in solvables:
            if s.id in self.meta or s.id not in self.native:
                continue
            index, table = self.native[s.id]
            line = table.get((s.name, s.evr, s.arch))
            if line is None:
                raise RepoMetadataError(f"{index.url} has no entry for {s.name} {s.evr}")
            self.meta[s.id] = indexcache.record(line, index.base_uri)

    def add(self, repo_name: str, packages: Iterable[PackageMeta]) -> None:
        """Add packages as a repo (``@System`` for the installed ones)."""
        repo = self.installed if repo_name == "@System" else self.pool.add_repo(repo_name)
        for meta in packages:
            s = repo.add_solvable()
            s.name, s.evr = meta.name, meta.evr
            s.arch = meta.arch if meta.arch not in ("", "any") else "noarch"
            if self.kind is PackageType.RPM and s.arch == "all":
                s.arch = "noarch"
            s.add_deparray(solv.SOLVABLE_PROVIDES,
                           self.pool.rel2id(s.nameid, s.evrid, solv.REL_EQ))
            for dk, key in _DEP_KEYS.items():
                for group in meta.relations(dk):
                    s.add_deparray(key, _group_id(self.pool, group, self.kind))
                    self._file_deps.update(r.name for r in group if r.name.startswith("/"))
            self.meta[s.id] = meta
            self.repo_name[s.id] = repo_name
            self._pending.append((s, meta))

    def finish(self) -> None:
        """Add file provides that something requires, then index the pool."""
        for s, meta in self._pending:
            for f in meta.files:
                path = "/" + f.path.lstrip("/")
                if path in self._file_deps:
                    s.add_deparray(solv.SOLVABLE_PROVIDES, self.pool.str2id(path))
        self._pending.clear()
        for repo in self.pool.repos:
            repo.internalize()
        self.pool.addfileprovides()
        self.pool.createwhatprovides()


def resolve(kind: PackageType, arch: str, installed: list[PackageMeta],
            available: Mapping[str, list[PackageMeta]], request: Request,
            indexes: Mapping[str, list[IndexFile]] | None = None,
            tmp_dir: Path | None = None, solv_also: tuple[Path, ...] = ()) -> Resolution:
    """Solve ``request`` against the image and the sources; raise DepsolveError when impossible.

    ``indexes`` are apt indexes given to libsolv's own parser (fast for whole distributions),
    their parse cached under ``tmp_dir`` and also looked for in ``solv_also``.
    """
    u = Universe(kind, arch)
    u.add("@System", installed)
    for name, pkgs in available.items():
        u.add(name, pkgs)
    for name, files in (indexes or {}).items():
        for index in files:
            u.add_deb_index(name, index, tmp_dir or Path("/tmp"), solv_also)
    u.add(LOCAL_REPO, [*request.install_local, *request.replace_local])
    u.finish()
    return solve(u, request)


def solve(u: Universe, request: Request) -> Resolution:
    """Solve ``request`` in a finished universe (one universe serves many requests that
    name no local package files)."""
    jobs, installs, satisfied = _jobs(u, request)
    solver = _solve(u, request, jobs, installs)
    trans = solver.transaction()
    new = [s for s in trans.newsolvables()]
    u.fill_records(new)
    t = solv.Transaction
    leaving = (t.SOLVER_TRANSACTION_ERASE, t.SOLVER_TRANSACTION_UPGRADED,
               t.SOLVER_TRANSACTION_DOWNGRADED, t.SOLVER_TRANSACTION_OBSOLETED,
               t.SOLVER_TRANSACTION_CHANGED)
    gone = [s for s in u.installed.solvables
            if trans.steptype(s, t.SOLVER_TRANSACTION_SHOW_OBSOLETES) in leaving]
    install = tuple(sorted((u.meta[s.id] for s in new), key=lambda m: m.name))
    return Resolution(kind=u.kind, install=install,
                      remove=tuple(sorted((u.meta[s.id] for s in gone), key=lambda m: m.name)),
                      source_of={u.meta[s.id].nevra: u.repo_name[s.id] for s in new},
                      satisfied_by_base=tuple(satisfied))


def _solve(u: Universe, request: Request, jobs: list[solv.Job],
           installs: list[solv.Job]) -> solv.Solver:
    """A solved solver: for Debian first exactly what apt would mark (see
    :mod:`layering.aptpolicy`), else libsolv's own choice steered towards it."""
    marked = _apt_marks(u, request) if u.kind is PackageType.DEB else None
    if marked:
        jobs = _unlocked(u, jobs, {s.name for s in marked})
    solver = u.pool.Solver()
    if marked is not None:
        solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
        exact = [u.pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE, s.id)
                 for s in marked]
        if not solver.solve(jobs + exact):
            return solver
        solver = u.pool.Solver()
    favor = [u.pool.Job(solv.Job.SOLVER_FAVOR | solv.Job.SOLVER_SOLVABLE, s.id)
             for s in marked or ()]
    solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, int(request.no_recommends))
    problems = solver.solve(jobs + installs + favor)
    if problems:
        raise DepsolveError(explain(u, request, problems))
    return solver


def _unlocked(u: Universe, jobs: list[solv.Job], names: set[str]) -> list[solv.Job]:
    """``jobs`` without the locks of the installed packages named in ``names``: those apt
    marked a newer version of (an upgrade of a base package, as ``apt-get install``)."""
    def upgraded(j: solv.Job) -> bool:
        return (j.how & solv.Job.SOLVER_JOBMASK == solv.Job.SOLVER_LOCK
                and u.pool.id2solvable(j.what).name in names)
    return [j for j in jobs if not upgraded(j)]


def _apt_marks(u: Universe, request: Request) -> list[solv.XSolvable] | None:
    """What apt would add for the request, or None when its greedy walk fails."""
    gone = set(request.remove) | {m.name for m in request.replace_local}
    installed = {s.id for s in u.installed.solvables if s.name not in gone}
    marker = AptMarker(u.pool, installed, u.arch, recommends=not request.no_recommends,
                       fields=u.dep_fields)
    local_ids = {id(m) for m in (*request.install_local, *request.replace_local)}
    wanted = [u.pool.id2solvable(sid) for sid, meta in u.meta.items() if id(meta) in local_ids]
    for name in request.install:
        if _PLAIN_NAME.match(name):
            s = marker.requested(name)
            if s is not None:
                wanted.append(s)
        else:
            return None
    for s in wanted:
        if not marker.mark(s):
            return None
    return marker.marked


def _jobs(u: Universe, request: Request) -> tuple[list[solv.Job], list[solv.Job], list[str]]:
    """(locks and removals, the requested installs, requests the base already satisfies)."""
    pool = u.pool
    jobs: list[solv.Job] = []
    installs: list[solv.Job] = []
    unlocked = set(request.remove) | {m.name for m in request.replace_local}
    satisfied = []
    for name in request.install:
        sel = pool.select(name, solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_PROVIDES
                          | solv.Selection.SELECTION_DOTARCH | solv.Selection.SELECTION_REL)
        if sel.isempty():
            raise DepsolveError(f"cannot install {name}: no package provides it in the sources")
        if any(s.repo == u.installed for s in sel.solvables()):
            satisfied.append(name)
            continue
        installs += sel.jobs(solv.Job.SOLVER_INSTALL)
    local_ids = {id(m) for m in (*request.install_local, *request.replace_local)}
    for sid, meta in u.meta.items():
        if id(meta) in local_ids:
            installs.append(pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE, sid))
    for name in request.remove:
        sel = pool.select(name, solv.Selection.SELECTION_NAME
                          | solv.Selection.SELECTION_INSTALLED_ONLY)
        if sel.isempty():
            raise DepsolveError(f"cannot remove {name}: it is not installed in the base image")
        jobs += sel.jobs(solv.Job.SOLVER_ERASE)
    if request.remove:
        _refuse_essential(u, request)
    for s in u.installed.solvables:
        if s.name not in unlocked:
            jobs.append(pool.Job(solv.Job.SOLVER_LOCK | solv.Job.SOLVER_SOLVABLE, s.id))
    return jobs, installs, satisfied


def _refuse_essential(u: Universe, request: Request) -> None:
    """An Essential package, or one an Essential package depends on, is never removed (apt
    asks for a confirmation phrase; strata refuses)."""
    gone = set(request.remove)
    essential = [s for s in u.installed.solvables
                 if (meta := u.meta.get(s.id)) is not None and meta.essential]
    for s in essential:
        if s.name in gone:
            raise DepsolveError(f"cannot remove {s.name}: it is an Essential package of the "
                                "base image (the system needs it to work)")
    for s in essential:
        for dep in s.lookup_deparray(solv.SOLVABLE_REQUIRES, 0):
            providers = [p for p in u.pool.whatprovides(dep.id) if p.repo == u.installed]
            if providers and all(p.name in gone for p in providers):
                raise DepsolveError(f"cannot remove {providers[0].name}: the Essential package "
                                    f"{s.name} depends on it ({dep})")


def _describe(u: Universe, dep: solv.Dep) -> str:
    text = str(dep)
    parts = text.split(" ", 2)
    if len(parts) == 3:
        return f"{parts[0]} ({parts[1]} {parts[2]})"
    return text


def _availability(u: Universe, dep: solv.Dep) -> str:
    name = str(dep).split(" ", 1)[0]
    found = [s for s in u.pool.select(name, solv.Selection.SELECTION_NAME).solvables()]
    if not found:
        return "no package provides it"
    where = sorted({f"{s.evr} in {u.repo_name.get(s.id, s.repo.name)}" for s in found})
    return f"only {', '.join(where)} {'is' if len(where) == 1 else 'are'} available"


def explain(u: Universe, request: Request, problems: list[solv.Problem]) -> str:
    """One readable first line, then libsolv's own explanation of every problem."""
    first = ""
    details = []
    for problem in problems:
        for rule in problem.findallproblemrules():
            for info in rule.allinfos():
                details.append(f"  {info.problemstr()}")
                if first:
                    continue
                subject = info.solvable.name if info.solvable else ""
                if info.type == solv.Solver.SOLVER_RULE_PKG_NOTHING_PROVIDES_DEP:
                    first = (f"cannot install {subject}: requires {_describe(u, info.dep)} "
                             f"but {_availability(u, info.dep)}")
                elif info.type in (solv.Solver.SOLVER_RULE_PKG_CONFLICTS,
                                   solv.Solver.SOLVER_RULE_PKG_SAME_NAME):
                    other = info.othersolvable.name if info.othersolvable else str(info.dep)
                    first = f"cannot install {subject}: conflicts with {other}"
                elif info.type == solv.Solver.SOLVER_RULE_PKG_REQUIRES and request.remove:
                    first = (f"cannot remove {', '.join(request.remove)}: "
                             f"{subject} requires {_describe(u, info.dep)}")
    if not first:
        first = f"cannot satisfy the request: {problems[0]}"
    seen: list[str] = []
    for d in details:
        if d not in seen:
            seen.append(d)
    return "\n".join([first, *seen])


__all__ = ["CNF", "LOCAL_REPO", "Request", "Resolution", "Universe", "explain", "resolve",
           "solve"]
