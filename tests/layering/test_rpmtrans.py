"""The runs of an rpm install and upgrade, planned by :mod:`layering.rpmtrans`: the order and
arguments rpm 4.18 gave in tests/layering/test_rpm_upgrade_oracle.py (its packages as
records here), plus a transaction installing and upgrading at once (``rpm -U`` of both:
every install first, then the erase, then each ``%posttrans``)."""

from __future__ import annotations

from importers.model import FileEntry, FileKind, PackageMeta, PackageType, Script
from layering.rpmtrans import Step, plan
from layering.scriptplan import plan_rpm_pre, plan_scripts
from store.mtree import MutableTree

UP = "usr/share/foo-up"


def _rpm(name: str, version: str, files: tuple[str, ...], *scripts: Script) -> PackageMeta:
    return PackageMeta(PackageType.RPM, name, version, "noarch", release="1", scripts=scripts,
                       files=tuple(FileEntry(f, FileKind.FILE, 0o100644) for f in files))


def _s(kind: str, body: str, *targets: str) -> Script:
    return Script(kind, body, "/bin/sh", targets=targets)


def _ft(kind: str, body: str) -> Script:
    return Script(kind, body, "/bin/sh", (f"/{UP}",), 1000000)


def _own(tag: str) -> tuple[Script, ...]:
    return tuple(_s(k, f"{k} {tag}") for k in ("prein", "postin", "preun", "postun",
                                               "posttrans"))


def _peer() -> PackageMeta:
    return _rpm("foo-peer", "1.0", ("usr/lib/foo-peer",),
                _s("triggerprein", "peer prein up", "foo-up"),
                _s("triggerprein", "peer prein new", "foo-new"),
                _s("triggerin", "peer in up", "foo-up"), _s("triggerun", "peer un up", "foo-up"),
                _s("triggerpostun", "peer postun up", "foo-up < 2.0"),
                _s("triggerin", "never", "foo-new >= 5.0"),
                _s("triggerin", "peer in new", "foo-new < 5.0"),
                *(_ft(k, k) for k in ("filetriggerin", "filetriggerun", "filetriggerpostun",
                                      "transfiletriggerin", "transfiletriggerun",
                                      "transfiletriggerpostun")))


def _up(version: str) -> PackageMeta:
    only = "old-only.txt" if version == "1.0" else "new-only.txt"
    extra = () if version == "1.0" else (_s("triggerun", "up2 un up<2", "foo-up < 2.0"),)
    return _rpm("foo-up", version, (UP, f"{UP}/common.txt", f"{UP}/{only}"),
                *_own(f"up-{version}"), _s("triggerin", f"up-{version} in peer", "foo-peer"),
                *extra)


def _new() -> PackageMeta:
    return _rpm("foo-new", "1.0", ("usr/lib/foo-new", "usr/lib/foo-new/n.txt"), *_own("new"),
                _s("triggerin", "new in peer", "foo-peer"), _s("triggerin", "new in new", "foo-new"),
                _s("triggerprein", "new prein peer", "foo-peer"))


def _flat(steps: list[Step]) -> list[tuple[str, ...]]:
    return [(r.body, *r.args, *r.stdin.split()) for s in steps for r in s.runs]


INSTALL = [("peer prein new", "1", "0"), ("new prein peer", "0", "1"), ("prein new", "1"),
           ("postin new", "1"), ("peer in new", "1", "1"), ("new in new", "1", "1"),
           ("new in new", "1", "1"), ("new in peer", "1", "1"), ("posttrans new", "1")]
UPGRADE_INSTALL = [
    ("peer prein up", "1", "1"), ("prein up-2.0", "2"),
    ("filetriggerin", "0", f"/{UP}", f"/{UP}/common.txt", f"/{UP}/new-only.txt"),
    ("postin up-2.0", "2"), ("peer in up", "1", "2"), ("up-2.0 in peer", "2", "1")]
UPGRADE_ERASE = [
    ("filetriggerun", "0", f"/{UP}/old-only.txt"), ("peer un up", "1", "1"),
    ("up2 un up<2", "2", "1"), ("preun up-1.0", "1"),
    ("filetriggerpostun", "0", f"/{UP}/old-only.txt"), ("postun up-1.0", "1"),
    ("peer postun up", "1", "1")]
TRANS_UN = [("transfiletriggerun", "0", f"/{UP}", f"/{UP}/common.txt", f"/{UP}/old-only.txt")]
AFTER = [("transfiletriggerin", "0", f"/{UP}", f"/{UP}/common.txt", f"/{UP}/new-only.txt"),
         ("transfiletriggerpostun", "0")]


def test_install_runs_triggerin_of_the_base_and_its_own() -> None:
    """``rpm -i foo-new``: foo-peer's %triggerprein/%triggerin on it, its own on foo-peer,
    its self-trigger twice (runTriggers, then runImmedTriggers)."""
    base = [_peer(), _up("1.0")]
    runs = plan_scripts(PackageType.RPM, [_new()], MutableTree(), installed=base,
                        base=lambda: base)
    assert [(r.body, *r.args) for r in runs] == INSTALL


def test_upgrade_runs_as_rpm_U() -> None:
    """``rpm -U foo-up-2.0``: the old version's erase after the new one's %post, with the
    instance counts of a database holding both; %posttrans $1 = 2."""
    steps = plan([_up("2.0")], [_peer(), _up("1.0")])
    assert [(s.remove is not None, s.host) for s in steps] == [
        (False, True), (True, False), (False, False), (False, True)]
    assert _flat(steps) == [*TRANS_UN, *UPGRADE_INSTALL, *UPGRADE_ERASE[:4],
                            *UPGRADE_ERASE[4:], ("posttrans up-2.0", "2"), *AFTER]
    assert _flat(steps[:2])[-1] == ("preun up-1.0", "1")


def test_upgrade_removes_only_what_the_new_version_lacks() -> None:
    steps = plan([_up("2.0")], [_peer(), _up("1.0")])
    gone = steps[1].remove
    assert gone is not None and gone.version == "1.0"
    assert [f.path for f in gone.files] == [f"{UP}/old-only.txt"]


def test_install_and_upgrade_in_one_transaction() -> None:
    """``rpm -U foo-up-2.0 foo-new``: installs in install order (foo-new first), the erase,
    then each %posttrans (the log rpm gave for that command)."""
    added = [_new(), _up("2.0")]
    steps = plan(added, [_peer(), _up("1.0")])
    assert _flat(steps) == [*TRANS_UN, *INSTALL[:-1], *UPGRADE_INSTALL, *UPGRADE_ERASE,
                            ("posttrans new", "1"), ("posttrans up-2.0", "2"), *AFTER]


def test_pre_counts_the_installed_version() -> None:
    """%pre runs before its package is counted: $1 = 2 over an installed version."""
    runs = plan_rpm_pre([_up("2.0")], [_up("1.0")])
    assert [(r.body, *r.args) for r in runs] == [("prein up-2.0", "2")]


def test_removal_runs_after_every_install() -> None:
    """Installing foo-new and removing foo-up in one transaction: rpm orders every install
    before every erase (``rpmtsOrder``'s two passes), %preun/%postun get $1 = 0, and the
    erased package's files all go (the log the librpm transaction gave)."""
    steps = plan([_new()], [_peer(), _up("1.0")], removed={"foo-up"})
    every = (f"/{UP}", f"/{UP}/common.txt", f"/{UP}/old-only.txt")
    assert _flat(steps) == [
        ("transfiletriggerun", "0", *every), *INSTALL[:-1], ("filetriggerun", "0", *every),
        ("peer un up", "1", "0"), ("preun up-1.0", "0"), ("filetriggerpostun", "0", *every),
        ("postun up-1.0", "0"), ("peer postun up", "1", "0"), ("posttrans new", "1"),
        ("transfiletriggerpostun", "0")]
    gone = steps[1].remove
    assert gone is not None and len(gone.files) == 3


def test_a_removal_alone_runs_as_rpm_e() -> None:
    """With nothing added, the transaction is rpmremove's ``rpm -e`` plan (the one
    tests/layering/test_rpm_remove_oracle.py checks), in the same steps."""
    from layering.rpmremove import plan_erase
    from tests.layering.test_rpmremove import _world

    for removed in ({"gone"}, {"gone", "watch"}):
        erase = plan_erase(_world(), removed)
        steps = plan([], _world(), removed=removed)
        assert [r for s in steps for r in s.runs] == erase.runs()
        assert [s.remove.name for s in steps if s.remove] == [e.pkg.name for e in erase.erases]
