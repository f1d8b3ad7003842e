"""rpm's install order (layering.rpmorder), against orders the real rpm -i gave."""

from __future__ import annotations

from importers.model import DepKind, FileEntry, FileKind, PackageMeta, PackageType, Relation
from layering.rpmorder import install_order


def _pkg(name: str, requires: tuple[str, ...] = (), provides: tuple[str, ...] = (),
         files: tuple[str, ...] = (), flags: int = 0) -> PackageMeta:
    deps = {DepKind.DEPENDS: tuple((Relation(r, flags=flags),) for r in requires),
            DepKind.PROVIDES: tuple((Relation(p),) for p in provides)}
    return PackageMeta(PackageType.RPM, name, "1", "noarch", deps=deps,
                       files=tuple(FileEntry(f, FileKind.FILE, 0o100644) for f in files))


FOO = [_pkg("foo-app", ("foo-dataset", "foo-service", "/bin/sh", "rpmlib(X)")),
       _pkg("foo-daemon", ("foo-user", "busybox"), ("foo-service",)),
       _pkg("foo-data", ("foo-triggers",), ("foo-dataset",)),
       _pkg("foo-prio", ("busybox",)), _pkg("foo-triggers", ("busybox",)),
       _pkg("foo-user", ("shadow-utils", "/bin/sh"))]


def _names(pkgs: list[PackageMeta]) -> list[str]:
    return [p.name for p in pkgs]


def _by_name(*names: str) -> list[PackageMeta]:
    return [next(p for p in FOO if p.name == n) for n in names]


def test_the_orders_rpm_gave_for_the_oracle_set() -> None:
    # rpm -i of fixtures.rpmimages.foo_specs (rpm 4.18): its queue favours packages more
    # others require, a newcomer before the first with as many or fewer
    assert _names(install_order(FOO)) == [
        "foo-user", "foo-daemon", "foo-triggers", "foo-data", "foo-app", "foo-prio"]
    given = _by_name("foo-user", "foo-daemon", "foo-triggers", "foo-data", "foo-app", "foo-prio")
    assert _names(install_order(given)) == [
        "foo-triggers", "foo-data", "foo-user", "foo-daemon", "foo-app", "foo-prio"]


def test_file_and_postun_requires_count() -> None:
    # rpm -i --nodeps a-user b-late c-erase shx gave shx c-erase b-late a-user
    sh = _pkg("sh", files=("usr/bin/sh",))
    user = _pkg("a-user", ("/usr/bin/sh",))
    late = _pkg("b-late", ("c-erase",), flags=1 << 12)  # Requires(postun)
    erase = _pkg("c-erase")
    assert _names(install_order([user, late, erase, sh])) == ["sh", "c-erase", "b-late", "a-user"]


def test_a_cycle_still_installs_everything() -> None:
    x, y = _pkg("x", ("y",)), _pkg("y", ("x",))
    assert sorted(_names(install_order([x, y]))) == ["x", "y"]
