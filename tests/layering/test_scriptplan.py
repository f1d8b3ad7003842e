"""Maintainer script order: dependencies are configured first, as dpkg does."""

from __future__ import annotations

from importers.model import DepKind, PackageMeta, PackageType, Relation, Script
from layering.scriptplan import dependency_order, plan_scripts
from store.mtree import MutableTree


def _pkg(name: str, **deps: list[list[str]]) -> PackageMeta:
    cnf = {DepKind(k.replace("_", "-")): tuple(tuple(Relation(n) for n in g) for g in groups)
           for k, groups in deps.items()}
    return PackageMeta(PackageType.DEB, name, "1.0", "amd64", deps=cnf,
                       scripts=(Script("postinst", "#!/bin/sh\n"),))


def test_dependencies_and_pre_depends_first_then_names() -> None:
    # cron's postinst needs the group cron-daemon-common's postinst creates (real bookworm)
    cron = _pkg("cron", pre_depends=[["cron-daemon-common"]], depends=[["libc6"]])
    common = _pkg("cron-daemon-common")
    dbus = _pkg("dbus", depends=[["dbus-system-bus-common"]])
    bus = _pkg("dbus-system-bus-common")
    assert [p.name for p in dependency_order([cron, common, dbus, bus])] == [
        "cron-daemon-common", "cron", "dbus-system-bus-common", "dbus"]


def test_virtual_alternatives_and_cycles() -> None:
    mailx = _pkg("bsd-mailx", depends=[["default-mta", "mail-transport-agent"]])
    exim = _pkg("exim4-daemon-light", provides=[["mail-transport-agent"]],
                depends=[["exim4-base"]])
    base = _pkg("exim4-base", depends=[["exim4-daemon-light"]])  # a cycle: broken by name
    order = [p.name for p in dependency_order([mailx, exim, base])]
    assert order.index("exim4-daemon-light") < order.index("bsd-mailx")
    assert sorted(order) == ["bsd-mailx", "exim4-base", "exim4-daemon-light"]


def test_postinst_runs_in_dependency_order() -> None:
    runs = plan_scripts(PackageType.DEB, [_pkg("a", depends=[["b"]]), _pkg("b")], MutableTree())
    assert [(r.package, r.name) for r in runs] == [("b", "postinst"), ("a", "postinst"),
                                                   ("dpkg", "triggers")]
