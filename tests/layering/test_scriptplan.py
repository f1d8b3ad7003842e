"""Maintainer script order: dependencies are configured first, as dpkg does; trigger
directives and diversions are read as dpkg reads them, hostile ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from importers.model import (
    DepKind,
    FileEntry,
    FileKind,
    PackageMeta,
    PackageType,
    Relation,
    Script,
)
from layering.diversions import Diversion, read_diversions
from layering.dpkgtriggers import Activation, parse_triggers
from layering.errors import ComposeError
from layering.scriptplan import dependency_order, plan_scripts, unpack_order
from layering.scripts import ScriptRun, driver_script
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
    # preinsts run dependencies first, ties by name
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


def test_postinsts_run_as_apt_configures_pre_depended_packages_then_pending() -> None:
    # openssh-server's install (bookworm, dpkg.log): apt configures systemd (and what it
    # needs) before it unpacks systemd-sysv, which pre-depends on it; dpkg --configure
    # --pending then takes the rest in its hash table's order, so systemd-timesyncd's
    # postinst runs before dbus-system-bus-common's (the systemd-timesync user gets its
    # uid before messagebus)
    added = [_pkg("dbus-system-bus-common"), _pkg("systemd-timesyncd", depends=[["systemd"]]),
             _pkg("systemd-sysv", pre_depends=[["systemd"]]), _pkg("libsystemd-shared"),
             _pkg("systemd", depends=[["libsystemd-shared"], ["libc6"]])]
    runs = plan_scripts(PackageType.DEB, added, MutableTree(), installed=[_pkg("libc6")])
    assert [r.package for r in runs if r.name == "postinst"] == [
        "libsystemd-shared", "systemd", "systemd-sysv", "systemd-timesyncd",
        "dbus-system-bus-common"]


def _rpm(name: str, files: tuple[str, ...] = (), *scripts: Script,
         requires: str = "") -> PackageMeta:
    deps = {DepKind.DEPENDS: ((Relation(requires),),)} if requires else {}
    return PackageMeta(PackageType.RPM, name, "1.0", "noarch", deps=deps, scripts=scripts,
                       files=tuple(FileEntry(f, FileKind.FILE, 0o100644) for f in files))


def _trig(kind: str, body: str, *prefixes: str, priority: int = 1000000) -> Script:
    return Script(kind, body, "/bin/sh", prefixes, priority)


def _plan(added: list[PackageMeta], base: list[PackageMeta]) -> list[tuple[str, ...]]:
    runs = plan_scripts(PackageType.RPM, added, MutableTree(), installed=base,
                        base=lambda: base)
    return [(r.package, r.name, *r.args, *r.stdin.split()) for r in runs]


def test_rpm_file_triggers_around_post_and_after_posttrans() -> None:
    """The order rpm 4.18 gave for the same packages (tests/layering/test_rpm_oracle.py)."""
    base = _rpm("base-data", ("usr/share/foo", "usr/share/foo/base.txt"))
    trig = _rpm("trig", (), _trig("filetriggerin", "in", "/usr/share/foo"),
                _trig("transfiletriggerin", "tr", "/usr/lib/p", "/usr/share/foo"))
    data = _rpm("data", ("usr/lib/p/p.so", "usr/share/foo/a"), requires="trig")
    prio = _rpm("prio", ("usr/share/foo/zz",), Script("postin", "post"),
                Script("posttrans", "pt"),
                _trig("filetriggerin", "hi", "/usr/share/foo", priority=2000000),
                _trig("filetriggerin", "lo", "/usr/share/foo/zz", priority=100),
                requires="data")
    assert _plan([prio, data, trig], [base]) == [
        ("trig", "%filetriggerin", "0", "/usr/share/foo", "/usr/share/foo/base.txt"),
        ("trig", "%filetriggerin", "0", "/usr/share/foo/a"),
        ("prio", "%filetriggerin", "0", "/usr/share/foo/zz"),  # its own, on its own files
        ("trig", "%filetriggerin", "0", "/usr/share/foo/zz"),
        ("prio", "%filetriggerin", "0", "/usr/share/foo", "/usr/share/foo/base.txt",
         "/usr/share/foo/a"),
        ("prio", "%post", "1"),
        ("prio", "%filetriggerin", "0", "/usr/share/foo/zz"),  # priority 100: after %post
        ("prio", "%posttrans", "1"),
        ("trig", "%transfiletriggerin", "0", "/usr/lib/p/p.so", "/usr/share/foo",
         "/usr/share/foo/base.txt", "/usr/share/foo/a", "/usr/share/foo/zz")]


def test_rpm_base_trigger_sees_only_the_new_files_after_the_transaction() -> None:
    base = [_rpm("base-data", ("usr/share/foo/base.txt",)),
            _rpm("trig", (), _trig("transfiletriggerin", "tr", "/usr/share/foo"))]
    assert _plan([_rpm("data", ("usr/share/foo/a",))], base) == [
        ("trig", "%transfiletriggerin", "0", "/usr/share/foo/a")]
    assert _plan([_rpm("other", ("usr/share/other",))], base) == []


def test_driver_gives_a_trigger_its_paths_on_stdin_and_others_dev_null() -> None:
    runs = [ScriptRun("t", "%filetriggerin", "cat", "/bin/sh", ("0",), stdin="/usr/a\n"),
            ScriptRun("p", "%post", "true", "/bin/sh", ("1",))]
    lines = [ln for ln in driver_script(runs, ["000-t.in", "001-p.post"]).splitlines()
             if ln.startswith("(")]
    assert lines == ["( exec '/bin/sh' '/run/strata/000-t.in' '0' ) < '/run/strata/000-t.in.in' 2>&1",
                     "( exec '/bin/sh' '/run/strata/001-p.post' '1' ) < /dev/null 2>&1"]


def test_preinst_names_its_package_to_debconf() -> None:
    """dpkg runs a preinst from tmp.ci/ beside the package's control, where debconf's frontend
    reads the package name (postfix's preinst loads its templates: without a name they are
    owned by "unknown" in config.dat); strata runs it from info/, so DEBCONF_PACKAGE says it."""
    pkg = PackageMeta(PackageType.DEB, "postfix", "1.0", "amd64",
                      scripts=(Script("preinst", "#!/bin/sh\n"), Script("postinst", "#!/bin/sh\n")))
    runs = {r.name: dict(r.env) for r in plan_scripts(PackageType.DEB, [pkg], MutableTree())}
    assert runs["preinst"]["DEBCONF_PACKAGE"] == "postfix"
    assert "DEBCONF_PACKAGE" not in runs["postinst"]  # the frontend takes it from the path


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


def test_strata_runs_ldconfig_only_when_the_images_dpkg_will_not() -> None:
    lib = PackageMeta(PackageType.DEB, "libx1", "1.0", "amd64",
                      files=(FileEntry("usr/lib/x86_64-linux-gnu/libx.so.1"),))
    db, tree = "usr/lib/sysimage/dpkg", MutableTree()
    tree.ensure_dir("usr/sbin")
    tree.set_file("usr/sbin/ldconfig", "0" * 64)
    activated = [Activation("ldconfig", "libx1:amd64", True)]

    def names() -> list[str]:
        return [f"{r.package} {r.name}" for r in plan_scripts(PackageType.DEB, [lib], tree, db,
                                                              activations=activated)]

    assert names() == ["ldconfig trigger", "dpkg triggers"]  # nobody is interested in it
    tree.ensure_dir(f"{db}/triggers")
    tree.set_file(f"{db}/triggers/ldconfig", "1" * 64)  # libc-bin's interest
    assert names() == ["dpkg triggers"]  # dpkg runs libc-bin's postinst triggered ldconfig
    activated = []
    assert names() == ["ldconfig trigger", "dpkg triggers"]  # a library without a triggers file


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
