"""The planned runs and database entries of a Debian base package replaced by another
version (dpkg's upgrade sequence; the oracle test is tests/layering/test_debupgrade.py)."""

from __future__ import annotations

from importers.model import FileEntry, PackageMeta, PackageType, Script
from layering.debupgrade import (
    Upgrade,
    find_upgrades,
    leaving,
    obsolete_conffiles,
    old_only,
    old_versions,
    swap_conffiles,
)
from layering.dpkgdb import list_file, status_stanza
from layering.scriptplan import plan_preinst, plan_scripts, plan_upgrade
from store.mtree import MutableTree

DB = "usr/lib/sysimage/dpkg"
SCRIPTS = tuple(Script(s, f"#!/bin/sh\necho {s}\n") for s in ("preinst", "postinst"))
OLD_STATUS = ("Package: thing\nStatus: install ok installed\nVersion: 1:1.0-1\n"
              "Architecture: amd64\nConffiles:\n /etc/thing.conf aaa\n /etc/gone.conf bbb\n")


def _old() -> PackageMeta:
    return PackageMeta(PackageType.DEB, "thing", "1.0", "amd64", epoch=1, release="1",
                       control=OLD_STATUS, conffiles=("etc/thing.conf", "etc/gone.conf"),
                       files=tuple(FileEntry(path=p) for p in (
                           "usr/share/thing", "usr/share/thing/common",
                           "usr/share/thing/old-only", "etc/thing.conf", "etc/gone.conf")))


def _new(version: str = "2.0") -> PackageMeta:
    return PackageMeta(PackageType.DEB, "thing", version, "amd64", scripts=SCRIPTS,
                       conffiles=("etc/thing.conf",),
                       control=f"Package: thing\nVersion: {version}\nArchitecture: amd64\n",
                       files=tuple(FileEntry(path=p) for p in (
                           "usr/share/thing", "usr/share/thing/common",
                           "usr/share/thing/new-only", "etc/thing.conf")))


def test_a_removed_package_added_again_is_an_upgrade_only_on_debian() -> None:
    other = PackageMeta(PackageType.DEB, "other", "1", "amd64")
    ups = find_upgrades(PackageType.DEB, [_old(), other], [_new()])
    assert list(ups) == ["thing"] and ups["thing"].new.version == "2.0"
    assert old_versions(ups) == {"thing": "1:1.0-1"}  # as dpkg prints it: epoch, revision
    assert find_upgrades(PackageType.RPM, [_old()], [_new()]) == {}
    foreign = PackageMeta(PackageType.DEB, "thing", "2.0", "i386")
    assert find_upgrades(PackageType.DEB, [_old()], [foreign]) == {}


def test_preinst_and_postinst_get_dpkgs_upgrade_arguments() -> None:
    old = {"thing": "1:1.0-1"}
    fresh = PackageMeta(PackageType.DEB, "fresh", "1", "all", scripts=SCRIPTS)
    pre = plan_preinst([_new(), fresh], DB, old)
    assert [(r.package, r.args) for r in pre] == [
        ("thing", ("upgrade", "1:1.0-1", "2.0")), ("fresh", ("install",))]
    runs = plan_scripts(PackageType.DEB, [_new(), fresh], MutableTree(), DB, old=old)
    post = [(r.package, r.args) for r in runs if r.name == "postinst"]
    assert sorted(post) == [("fresh", ("configure",)), ("thing", ("configure", "1:1.0-1"))]
    # without an old version the fresh-install arguments are untouched
    assert [r.args for r in plan_preinst([_new()], DB)] == [("install",)]


def test_old_prerm_and_postrm_run_with_the_new_version() -> None:
    bodies = {f"{DB}/info/thing.prerm": b"#!/bin/sh\necho old prerm\n",
              f"{DB}/info/thing.postrm": b"#!/bin/sh\necho old postrm\n"}
    prerm, postrm = plan_upgrade([(_old(), _new("0.9"))], DB, bodies.get)
    assert [(r.name, r.args, r.body, r.path) for r in prerm] == [
        ("prerm", ("upgrade", "0.9"), "#!/bin/sh\necho old prerm\n", f"/{DB}/info/thing.prerm")]
    assert [(r.name, r.args, r.body) for r in postrm] == [
        ("postrm", ("upgrade", "0.9"), "#!/bin/sh\necho old postrm\n")]
    env = dict(prerm[0].env)
    assert env["DPKG_MAINTSCRIPT_NAME"] == "prerm" and env["DPKG_MAINTSCRIPT_PACKAGE"] == "thing"
    assert plan_upgrade([(_old(), _new())], DB, lambda _p: None) == ([], [])


def test_old_only_files_go_and_old_only_conffiles_stay_obsolete() -> None:
    up = Upgrade(_old(), _new())
    assert [f.path for f in old_only(up).files] == ["usr/share/thing/old-only"]
    other = PackageMeta(PackageType.DEB, "other", "1", "amd64", files=(FileEntry("usr/x"),))
    assert [[f.path for f in p.files] for p in leaving([_old(), other], {"thing": up})] == [
        ["usr/share/thing/old-only"], ["usr/x"]]
    on_disk = {"etc/thing.conf": True, "etc/gone.conf": True}
    assert obsolete_conffiles(up, on_disk) == [("etc/gone.conf", "bbb")]
    assert obsolete_conffiles(up, {**on_disk, "etc/gone.conf": False}) == []
    stanza = status_stanza(_new(), {"etc/thing.conf": "ccc"}, [("etc/gone.conf", "bbb")])
    assert "Conffiles:\n /etc/thing.conf ccc\n /etc/gone.conf bbb obsolete\n" in stanza
    assert list_file(_new(), set(), ["etc/gone.conf"]).decode().splitlines()[-1] == (
        "/etc/gone.conf")


def test_conffiles_swapped_for_the_old_postrm_and_back() -> None:
    tree = MutableTree()
    tree.ensure_dir("usr/etc")
    tree.set_file("usr/etc/thing.conf", "new")
    tree.set_file("usr/etc/added.conf", "added")
    back = swap_conffiles(tree, [("usr/etc/thing.conf", "old"), ("usr/etc/added.conf", None),
                                 ("no/dir/x.conf", "x")])
    assert tree.lookup("usr/etc/thing.conf") == "old"
    assert tree.lookup("usr/etc/added.conf") is None
    assert tree.lookup("no/dir/x.conf") is None
    swap_conffiles(tree, back)
    assert tree.lookup("usr/etc/thing.conf") == "new"
    assert tree.lookup("usr/etc/added.conf") == "added"
