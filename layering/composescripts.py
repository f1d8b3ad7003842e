"""The maintainer-script steps of a compose, in dpkg's order.

1. ``prerm remove`` of removed base packages, over the tree that still holds their
   files (:func:`run_prerm`); their ``postrm remove`` runs are kept for step 4.
2. The added packages without a ``preinst`` are placed.
3. ``preinst install`` of the other added packages, before their files are placed
   (:func:`run_preinst`), as dpkg runs it before unpacking: a preinst sees the tree
   without its package's files, and the diversions it registers apply to the files
   of other packages placed after it (:mod:`layering.diversions`).  Packages
   without a preinst need no extra sandbox run.
4. The removed packages' ``postrm``, the added packages' ``postinst configure`` and
   the trigger processing (:func:`run_configure`, :mod:`layering.dpkgtriggers`).

A base package replaced by another version is upgraded as dpkg does
(:mod:`layering.debupgrade`): its old ``prerm upgrade`` runs with step 1
(:func:`run_prerm_upgrade`), its files stay for the new ``preinst upgrade``, the
new files are placed over them, the old ``postrm upgrade`` runs, then the old-only
files go (:func:`finish_upgrades`) and ``postinst configure OLD`` runs in step 4.

rpm images run one transaction as ``rpm -U`` and ``rpm -e`` would
(:mod:`layering.rpmtrans`): the ``%transfiletriggerun`` of what is erased, each added
package's ``%pre`` before its files, which go over an old version of its name; after
every ``%post`` the erased packages (removed, or upgraded) in erase order, each one's
``%preun`` and triggers over the tree that still holds its files, then its files (those
no added package ships) go, then its ``%postun`` and triggers
(:mod:`layering.rpmremove`); then ``%posttrans`` and the transaction file triggers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

from importers.dpkgdb import DB_DIRS as DPKG_DB_DIRS
from importers.model import PackageMeta, PackageType
from layering.assemble import Assembler
from layering.convert import config_dir
from layering.debupgrade import (
    Unpacking,
    Upgrade,
    obsolete_conffiles,
    old_only,
    swap_conffiles,
    unpacking,
)
from layering.diversions import read_diversions
from layering.dpkgdb import read_tree_file, write_info
from layering.dpkgtriggers import Activation
from layering.hoststate import HostSession, restore_image, seen_by_scripts, show_host
from layering.packages import Layer
from layering.scriptplan import (
    dependency_order,
    plan_preinst,
    plan_removal,
    plan_rpm_pre,
    plan_rpm_steps,
    plan_scripts,
    plan_upgrade,
    rpm_install_order,
)
from layering.scripts import ScriptLog, ScriptRun, run_scripts
from store.checkoutcache import CheckoutCache
from store.mtree import MutableTree
from store.progress import ProgressFn, Stage
from store.repo import Repo
from store.txn import Transaction


def find_dir(tree: MutableTree, candidates: tuple[str, ...], marker: str) -> str | None:
    """The first of ``candidates`` that is a directory of ``tree`` holding ``marker``."""
    for d in candidates:
        node = tree.lookup(d)
        if isinstance(node, MutableTree) and marker in node.files:
            return d
    return None


def dpkg_db(tree: MutableTree) -> str:
    """The image's dpkg database directory (``var/lib/dpkg`` when it has none)."""
    return find_dir(tree, DPKG_DB_DIRS, "status") or "var/lib/dpkg"


def has_preinst(pkg: PackageMeta) -> bool:
    """Whether a package ships a script that runs before its files are placed: a Debian
    ``preinst`` or an rpm ``%pre``."""
    name = "preinst" if pkg.type is PackageType.DEB else "prein"
    return any(s.name == name for s in pkg.scripts)


def run_prerm(repo: Repo, txn: Transaction, tree: MutableTree, kind: PackageType,
              gone: list[PackageMeta], checkouts: CheckoutCache,
              log: ScriptLog) -> list[ScriptRun]:
    """Run ``prerm remove`` of the base packages ``gone`` (removed, not replaced), over
    the tree that still holds their files; return their ``postrm remove`` runs."""
    if not gone:
        return []
    db = dpkg_db(tree)

    prerm, postrm = plan_removal(kind, gone, db, partial(read_tree_file, repo, tree))
    log.entries.extend(run_scripts(repo, txn, tree, prerm, checkouts=checkouts).entries)
    return postrm


def run_prerm_upgrade(repo: Repo, txn: Transaction, tree: MutableTree,
                      ups: Sequence[Upgrade], checkouts: CheckoutCache,
                      log: ScriptLog) -> Unpacking:
    """Run the old ``prerm upgrade NEW`` of the upgraded Debian packages ``ups`` over the
    tree that holds their old files; return their old ``postrm upgrade NEW`` runs (both
    bodies read now, before the new control files replace them) with the conffiles as
    the old versions left them."""
    if not ups:
        return Unpacking()
    db = dpkg_db(tree)

    prerm, postrm = plan_upgrade([(u.old, u.new) for u in ups], db,
                                 partial(read_tree_file, repo, tree))
    if prerm:
        log.entries.extend(run_scripts(repo, txn, tree, prerm, checkouts=checkouts).entries)
    return unpacking(ups, postrm, tree)


def finish_upgrades(repo: Repo, txn: Transaction, asm: Assembler, ups: Sequence[Upgrade],
                    kept: set[str], pending: Unpacking, *, checkouts: CheckoutCache,
                    log: ScriptLog, host: HostSession | None) -> dict[str, list[tuple[str, str]]]:
    """Once the new versions are placed: run the old ``postrm upgrade`` runs over the
    conffiles as the old versions left them (dpkg installs the new ones when it
    configures), then take out the files only the old versions had (not their
    conffiles, which stay obsolete, nor paths a ``kept`` package owns).  Return
    name -> the obsolete conffiles (path, old md5) for the dpkg database."""
    if pending.postrm:
        new = swap_conffiles(asm.tree, pending.conffiles)
        _run(repo, txn, asm.tree, pending.postrm, checkouts, log, host, None)
        swap_conffiles(asm.tree, new)
    obsolete = {}
    for up in ups:
        exists = {c: asm.tree.lookup(asm.real_path(c)) is not None for c in up.old.conffiles}
        obsolete[up.new.name] = obsolete_conffiles(up, exists)
        asm.remove_package(old_only(up), kept)
    return obsolete


def run_preinst(repo: Repo, txn: Transaction, tree: MutableTree, pkgs: list[PackageMeta],
                checkouts: CheckoutCache, log: ScriptLog, host: HostSession | None,
                installed: Sequence[PackageMeta] = (), old: Mapping[str, str] | None = None,
                ) -> None:
    """Run ``preinst install`` of ``pkgs`` (dependencies first) before their files are in
    the tree (``preinst upgrade OLD NEW`` for those replacing version ``old[name]``);
    their control files are put in the dpkg database first, where the scripts
    run from (debconf finds ``PKG.templates`` beside them).  rpm packages: their
    ``%triggerprein`` and ``%pre`` runs in rpm's install order over the installed
    packages ``installed`` (``$1 = 2`` for one upgrading an installed version, else 1)."""
    if pkgs and pkgs[0].type is PackageType.RPM:
        _run(repo, txn, tree, plan_rpm_pre(pkgs, installed), checkouts, log, host, None)
        return
    db = dpkg_db(tree)
    ordered = dependency_order(pkgs)
    for pkg in ordered:
        write_info(txn, tree, db, pkg, set())
    _run(repo, txn, tree, plan_preinst(ordered, db, old), checkouts, log, host, None)


def place_packages(repo: Repo, txn: Transaction, asm: Assembler, layers: list[Layer],
                   removed: set[str], *, scripts: bool, checkouts: CheckoutCache,
                   log: ScriptLog, host: HostSession | None, assembling: Stage,
                   rpm_db: Callable[[], Sequence[PackageMeta]] = list,
                   old: Mapping[str, str] | None = None) -> bool:
    """Place the added packages into ``asm``'s tree, those with a Debian preinst after it
    ran (when ``scripts``; ``old``: the versions upgraded ones replace), honouring dpkg's
    diversions; whether any preinst ran.  rpm
    packages are placed in rpm's install order, each ``%pre`` run just before its package
    (:func:`_place_rpm`; ``rpm_db``: the base's database with file lists, for an upgrade's
    ``%transfiletriggerun``)."""
    if asm.kind is PackageType.RPM and scripts:
        return _place_rpm(repo, txn, asm, layers, removed, checkouts=checkouts, log=log,
                          host=host, assembling=assembling, rpm_db=rpm_db)
    late = [x for x in layers if has_preinst(x.meta)] if scripts else []
    if asm.kind is PackageType.DEB:
        asm.diversions = read_diversions(repo, asm.tree, dpkg_db(asm.tree))
    for layer in [x for x in layers if x not in late]:
        asm.add_package(layer.meta, layer.commit, removed)
        assembling.advance()
    if late:
        run_preinst(repo, txn, asm.tree, [x.meta for x in late], checkouts, log, host,
                    old=old)
        asm.diversions = read_diversions(repo, asm.tree, dpkg_db(asm.tree))
    for layer in late:
        asm.add_package(layer.meta, layer.commit, removed)
        assembling.advance()
    return bool(late)


def _place_rpm(repo: Repo, txn: Transaction, asm: Assembler, layers: list[Layer],
               removed: set[str], *, checkouts: CheckoutCache, log: ScriptLog,
               host: HostSession | None, assembling: Stage,
               rpm_db: Callable[[], Sequence[PackageMeta]]) -> bool:
    """As rpm unpacks a transaction: the ``%transfiletriggerun`` of the packages erased
    (named ``removed``) first, then in install order a package's ``%triggerprein`` and
    ``%pre`` run over the packages placed before it, then its files are placed (their
    owners resolved by the users that ``%pre`` and the earlier ones created).  One
    sandbox run per ``%pre``.  True: every run before the files is done."""
    from layering import rpmtrans

    by_meta = {id(x.meta): x for x in layers}
    prein = any(s.name == "triggerprein" for p in [*asm.installed, *(x.meta for x in layers)]
                for s in p.scripts)
    db = list(rpm_db()) if removed or prein else []
    if removed:
        first = rpmtrans.trans_un([x.meta for x in layers], db, removed)
        _run(repo, txn, asm.tree, first, checkouts, log, None, None)  # as erase runs
    for meta in rpm_install_order([x.meta for x in layers]):
        if has_preinst(meta) or prein:
            run_preinst(repo, txn, asm.tree, [meta], checkouts, log, host, db)
        db.append(meta)
        layer = by_meta[id(meta)]
        asm.add_package(layer.meta, layer.commit, removed)
        assembling.advance()
    return True


def run_configure(repo: Repo, txn: Transaction, tree: MutableTree, kind: PackageType,
                  added: list[PackageMeta], postrm: list[ScriptRun], *,
                  activations: list[Activation], preinst_done: bool,
                  checkouts: CheckoutCache, log: ScriptLog, host: HostSession | None,
                  progress: ProgressFn | None,
                  base: tuple[list[PackageMeta], Callable[[], list[PackageMeta]]] = ([], list),
                  removed: set[str] | None = None,
                  remove: Callable[[PackageMeta], None] | None = None,
                  old: Mapping[str, str] | None = None) -> None:
    """Run the removed packages' postrm, then the added ones' scripts (their preinst too
    unless ``preinst_done``) and the triggers, showing them the host's users and
    identity when ``host`` is given (``base``: the kept base packages, and the same
    with file lists in database order, for rpm's triggers, the versions added packages
    upgrade included).  For rpm, ``postrm`` (the removal's ``%transfiletriggerpostun``)
    runs after the added packages' scripts; the base packages named ``removed`` (and
    those added ones upgrade) are erased after the installs, ``remove`` taking each
    one's files out between its ``%preun`` and ``%postun``.  ``old``: the versions that
    upgraded Debian packages replace."""
    if kind is PackageType.RPM:
        from layering import rpmtrans

        steps = plan_rpm_steps(added, tree, base[0], base[1], preinst=not preinst_done,
                               removed=removed or set())
        steps[-1] = rpmtrans.Step((*steps[-1].runs, *postrm))
        counted = Stage(progress, "scripts", sum(len(s.runs) for s in steps))
        for step in steps:
            _run(repo, txn, tree, step.runs, checkouts, log, host if step.host else None,
                 counted)
            if step.remove is not None and remove is not None:
                remove(step.remove)
        counted.finish()
        return
    planned = plan_scripts(kind, added, tree, dpkg_db(tree), base[0], base[1],
                           preinst=not preinst_done, activations=activations, old=old)
    runs = postrm + planned
    scripts = Stage(progress, "scripts", len(runs))
    _run(repo, txn, tree, runs, checkouts, log, host, scripts)
    scripts.finish()


def _run(repo: Repo, txn: Transaction, tree: MutableTree, runs: Sequence[ScriptRun],
         checkouts: CheckoutCache, log: ScriptLog, host: HostSession | None,
         counted: Stage | None) -> None:
    view = None
    if runs and host is not None:
        view = show_host(tree, txn, host.state, config_dir(tree))
    log.entries.extend(run_scripts(repo, txn, tree, runs, checkouts=checkouts,
                                   counted=counted).entries)
    if view is not None and host is not None:
        host.state = seen_by_scripts(repo, tree, view)
        restore_image(repo, tree, txn, view)
