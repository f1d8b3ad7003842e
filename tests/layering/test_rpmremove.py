"""The runs ``rpm -e`` makes, planned by :mod:`layering.rpmremove` (the order rpm 4.18 gave
in tests/layering/test_rpm_remove_oracle.py), and the trigger data the importer reads."""

from __future__ import annotations

import shutil

import pytest

from fixtures.rpmimages import build
from fixtures.rpmremoveimages import watch_spec
from importers.model import (
    CNF,
    DepKind,
    FileEntry,
    FileKind,
    PackageMeta,
    PackageType,
    Relation,
    Script,
)
from importers.rpm import open_rpm
from layering import rpmorder
from layering.errors import ScriptError
from layering.rpmremove import erase_order, plan_erase
from tests.layering.realworld import cache_root

SHARE = "/usr/share/foo"


def _rpm(name: str, files: tuple[str, ...] = (), *scripts: Script, version: str = "1.0",
         requires: str = "") -> PackageMeta:
    groups = tuple((Relation(r),) for r in requires.split())
    deps: dict[DepKind, CNF] = {DepKind.DEPENDS: groups} if groups else {}
    return PackageMeta(PackageType.RPM, name, version, "noarch", release="1", deps=deps,
                       scripts=scripts,
                       files=tuple(FileEntry(f, FileKind.FILE, 0o100644) for f in files))


def _ft(kind: str, body: str, *prefixes: str, priority: int = 1000000) -> Script:
    return Script(kind, body, "/bin/sh", prefixes, priority)


def _tr(kind: str, body: str, *targets: str) -> Script:
    return Script(kind, body, "/bin/sh", targets=targets)


def _flat(db: list[PackageMeta], removed: set[str]) -> list[tuple[str, ...]]:
    return [(r.package, r.body, *r.args, *r.stdin.split()) for r in
            plan_erase(db, removed).runs()]


def _world() -> list[PackageMeta]:
    ftrig = _rpm("ftrig", ("usr/share/foo", "usr/share/foo/keep.txt"),
                 _ft("filetriggerun", "fu", SHARE),
                 _ft("filetriggerun", "fu-low", f"{SHARE}/gone", priority=100),
                 _ft("filetriggerpostun", "fp", SHARE),
                 _ft("filetriggerpostun", "fp-low", "/usr/lib/gone", f"{SHARE}/gone",
                     priority=100),
                 _ft("transfiletriggerun", "tu", "/usr/lib/gone", SHARE),
                 _ft("transfiletriggerun", "tu-low", "/usr/lib/gone", priority=5),
                 _ft("transfiletriggerpostun", "tp", SHARE),
                 _ft("transfiletriggerpostun", "tp-never", "/usr/lib/nothing", priority=5))
    watch = _rpm("watch", (), _tr("triggerun", "tw", "gone"),
                 _tr("triggerpostun", "never", "gone >= 5.0"),
                 _tr("triggerpostun", "tpw", "gone < 2.0"), _tr("triggerin", "in", "gone"))
    gone = _rpm("gone", ("usr/lib/gone", "usr/lib/gone/bin.txt", "usr/share/foo/c.txt",
                         "usr/share/foo/gone", "usr/share/foo/gone/a.txt"),
                Script("prein", "pre"), Script("preun", "preun"), Script("postun", "postun"),
                _tr("triggerun", "own", "watch"), version="1.5")
    return [ftrig, watch, gone]


def test_erase_runs_in_the_order_rpm_e_gave() -> None:
    """Transaction file triggers first, then rpmPackageErase's order, transfiletriggerpostun
    last (no stdin); $1/$2 as rpm gave them."""
    a, b, c, gd = ("/usr/lib/gone", "/usr/lib/gone/bin.txt", f"{SHARE}/c.txt",
                   f"{SHARE}/gone")
    ga = f"{SHARE}/gone/a.txt"
    assert _flat(_world(), {"gone"}) == [
        ("ftrig", "tu", "0", a, b, c, gd, ga),
        ("ftrig", "tu-low", "0", a, b),
        ("ftrig", "fu", "0", c, gd, ga),
        ("gone", "own", "0", "1"),
        ("watch", "tw", "1", "0"),
        ("gone", "preun", "0"),
        ("ftrig", "fu-low", "0", gd, ga),
        ("ftrig", "fp", "0", c, gd, ga),
        ("gone", "postun", "0"),
        ("watch", "tpw", "1", "0"),
        ("ftrig", "fp-low", "0", a, b, gd, ga),
        ("ftrig", "tp", "0")]


def test_before_and_after_the_files_go() -> None:
    plan = plan_erase(_world(), {"gone"})
    (erase,) = plan.erases
    assert [r.body for r in plan.first] == ["tu", "tu-low"]
    assert [r.body for r in erase.before] == ["fu", "own", "tw", "preun", "fu-low"]
    assert [r.body for r in erase.after] == ["fp", "postun", "tpw", "fp-low"]
    assert [(r.body, r.stdin) for r in plan.last] == [("tp", "")]


def test_nothing_runs_for_a_package_without_scripts_or_watchers() -> None:
    assert _flat([_rpm("lone", ("usr/bin/lone",))], {"lone"}) == []


def test_a_package_is_erased_before_what_it_requires() -> None:
    """The one erased first is gone from the database when the second is erased: the
    trigger on the first does not see it, and its own transfiletriggerpostun never runs."""
    lib = _rpm("lib", ("usr/share/foo/lib",), Script("preun", "lib-preun"))
    app = _rpm("app", ("usr/share/foo/app",), Script("preun", "app-preun"),
               _ft("transfiletriggerpostun", "app-tp", SHARE), requires="lib")
    watch = _rpm("watch", (), _tr("triggerpostun", "w-app", "app"),
                 _tr("triggerpostun", "w-lib", "lib"))
    assert [p.name for p in erase_order([lib, app])] == ["app", "lib"]
    assert _flat([lib, app, watch], {"lib", "app"}) == [
        ("app", "app-preun", "0"), ("watch", "w-app", "1", "0"),
        ("lib", "lib-preun", "0"), ("watch", "w-lib", "1", "0")]


@pytest.mark.parametrize(("given", "erased"), [
    ("gone watch app lib free top", "top app lib free watch gone"),
    ("free top lib app watch gone", "top app lib free gone watch"),
    ("lib top gone watch free app", "top app lib free watch gone"),
])
def test_erase_order_as_rpm_tsort_gave(given: str, erased: str) -> None:
    """``rpm -e --test -vv`` with the arguments in the ``given`` order (rpm 4.18's
    rpmtsOrder: installs' queue, relations reversed)."""
    pkgs = {"gone": _rpm("gone"), "watch": _rpm("watch"), "app": _rpm("app", requires="lib"),
            "lib": _rpm("lib"), "free": _rpm("free"), "top": _rpm("top", requires="app free")}
    assert [p.name for p in rpmorder.erase_order([pkgs[n] for n in given.split()])] == \
        erased.split()


def test_a_trigger_on_a_version_not_met_does_not_fire() -> None:
    watch = _rpm("watch", (), _tr("triggerun", "w", "gone > 1.0"))
    assert _flat([watch, _rpm("gone", version="1.0")], {"gone"}) == []
    assert _flat([watch, _rpm("gone", version="1.1")], {"gone"}) == [("watch", "w", "1", "0")]


def test_a_hostile_trigger_target_matches_nothing() -> None:
    watch = _rpm("watch", (), _tr("triggerun", "w", "gone ~= 1", "gone  >= ", " "))
    assert _flat([watch, _rpm("gone")], {"gone"}) == []


def test_lua_scriptlets_are_refused_naming_the_package() -> None:
    lua = _rpm("gone", (), Script("postun", "print('x')", "<lua>"))
    with pytest.raises(ScriptError, match="%postun of gone is a lua scriptlet"):
        plan_erase([lua], {"gone"})
    watch = _rpm("watch", (), Script("triggerun", "x", "<lua>", targets=("gone",)))
    with pytest.raises(ScriptError, match="%triggerun of watch is a lua scriptlet"):
        plan_erase([watch, _rpm("gone")], {"gone"})


def test_script_with_targets_round_trips() -> None:
    s = Script("triggerpostun", "b", "/bin/sh", targets=("gone < 2.0", "other"))
    assert Script.from_list(s.to_list()) == s
    f = Script("filetriggerun", "b", "/bin/sh", ("/usr",), 5)
    assert Script.from_list(f.to_list()) == f


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="needs rpmbuild")
def test_importer_reads_package_triggers_from_a_built_package() -> None:
    meta = open_rpm(build(watch_spec(), cache_root() / "rpm-oracle")).meta
    assert [(s.name, s.targets) for s in meta.scripts if s.targets] == [
        ("triggerun", ("foo-gone",)), ("triggerpostun", ("foo-gone >= 5.0",)),
        ("triggerpostun", ("foo-gone < 2.0",)), ("triggerin", ("foo-gone",))]
