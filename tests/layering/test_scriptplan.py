"""Maintainer script order: dependencies are configured first, as dpkg does; trigger
directives and diversions are read as dpkg reads them, hostile ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from importers.model import DepKind, PackageMeta, PackageType, Relation, Script
from layering.diversions import Diversion, read_diversions
from layering.dpkgtriggers import Activation, parse_triggers
from layering.errors import ComposeError
from layering.scriptplan import dependency_order, plan_scripts, unpack_order
from store.mtree import MutableTree
from store.objects import FileMeta
from store.repo import Repo, RepoMode


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


def test_unpack_order_puts_pre_dependencies_before_other_ties() -> None:
    # apt unpacks systemd (systemd-sysv pre-depends on it) before dbus: triggers/File's order
    sysv = _pkg("systemd-sysv", pre_depends=[["systemd"]])
    order = [p.name for p in unpack_order([_pkg("dbus"), sysv, _pkg("systemd")], ())]
    assert order == ["systemd", "dbus", "systemd-sysv"]
    # dpkg configures by name among ties: dbus before systemd (messagebus gets its gid first)
    order = [p.name for p in dependency_order([_pkg("dbus"), sysv, _pkg("systemd")])]
    assert order == ["dbus", "systemd", "systemd-sysv"]


def test_unpack_order_puts_requested_packages_before_other_ties() -> None:
    # systemd-timesyncd needs systemd; dbus came in by a Recommends: apt unpacks systemd first
    timesyncd = _pkg("systemd-timesyncd", depends=[["systemd"]])
    order = [p.name for p in unpack_order([_pkg("dbus"), timesyncd, _pkg("systemd")],
                                          ("systemd-timesyncd",))]
    assert order == ["systemd", "systemd-timesyncd", "dbus"]


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


def _triggers(body: str) -> PackageMeta:
    return PackageMeta(PackageType.DEB, "t", "1.0", "amd64",
                       scripts=(Script("triggers", body),))


def test_trigger_directives_parsed_as_dpkg_reads_them() -> None:
    lines = parse_triggers(_triggers("# comment\n interest /usr/share/man \n"
                                     "interest-noawait ldconfig\nactivate-await x.y+z\n"))
    assert [(t.directive, t.name, t.noawait) for t in lines] == [
        ("interest", "/usr/share/man", False), ("interest", "ldconfig", True),
        ("activate", "x.y+z", False)]


@pytest.mark.parametrize("body", ["interest ../../etc/passwd\n", "interest File\n",
                                  "interest Unincorp\n", "interest /usr//share\n",
                                  "interest /usr/share/\n", "activate a_b\n",
                                  "interest-sometimes x\n", "interest\n"])
def test_trigger_names_dpkg_refuses_are_refused(body: str) -> None:
    with pytest.raises(ComposeError, match="in package t"):
        parse_triggers(_triggers(body))


def test_triggers_processed_last_even_without_scripts() -> None:
    plain = PackageMeta(PackageType.DEB, "plain", "1.0", "all")
    assert plan_scripts(PackageType.DEB, [plain], MutableTree()) == []
    runs = plan_scripts(PackageType.DEB, [plain], MutableTree(), "usr/lib/sysimage/dpkg",
                        activations=[Activation("/usr/share/man", "plain", False)])
    assert [(r.package, r.name) for r in runs] == [("dpkg", "triggers")]
    assert "dpkg-trigger --by-package='plain' '/usr/share/man'" in runs[0].body
    assert runs[0].body.rstrip().endswith("exec dpkg --triggers-only --pending")


def _diversions(tmp_path: Path, text: str) -> dict[str, Diversion]:
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE)
    tree = MutableTree()
    with repo.transaction() as txn:
        tree.ensure_dir("db")
        tree.set_file("db/diversions", txn.write_file(FileMeta(0, 0, 0o100644), text.encode()))
        return read_diversions(repo, tree, "db")


def test_diversions_read_and_hostile_targets_refused(tmp_path: Path) -> None:
    found = _diversions(tmp_path, "/sbin/halt\n/lib/molly-guard/halt\nmolly-guard\n"
                                  "/etc/x\n/etc/x.local\n:\n")
    assert found["/sbin/halt"] == Diversion("/lib/molly-guard/halt", "molly-guard")
    assert found["/etc/x"].applies("molly-guard") and not found["/sbin/halt"].applies(
        "molly-guard")
    for bad in ("/a\n/../../x\np\n", "/a\nrelative\np\n", "/a\n/b\n"):
        with pytest.raises(ComposeError, match="diversions"):
            _diversions(tmp_path / str(len(bad)), bad)
