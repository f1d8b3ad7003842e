"""The resolver's apt policy on small package sets (no files, no network)."""

from __future__ import annotations

import pytest

from importers.debcontrol import meta_from_control
from importers.model import Origin, PackageMeta, PackageType
from layering.errors import DepsolveError
from layering.resolve import Request, Resolution, resolve


def _pkg(name: str, fields: str = "", *, installed: bool = False) -> PackageMeta:
    text = f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\n{fields}"
    return meta_from_control(text, origin=Origin.INSTALLED if installed else Origin.CATALOGUE)


BASE = [_pkg("libc6", installed=True),
        _pkg("bash", "Essential: yes\nPre-Depends: libtinfo6\n", installed=True),
        _pkg("libtinfo6", installed=True), _pkg("mawk", "Provides: awk\n", installed=True)]
AVAILABLE = [
    _pkg("app", "Depends: zz-first | aa-second\nRecommends: app-doc\n"),
    _pkg("zz-first", "Depends: libc6\n"), _pkg("aa-second"), _pkg("app-doc"),
    _pkg("picky", "Depends: hated | fallback\n"), _pkg("hated", "Conflicts: libc6\n"),
    _pkg("fallback"),
    _pkg("mta-a", "Provides: mail-transport-agent\n"),
    _pkg("mta-b", "Provides: mail-transport-agent\n"),
    _pkg("only-one", "Provides: lonely-virtual\n"),
    _pkg("needs-pre", "Pre-Depends: pre-thing\n"), _pkg("pre-thing"),
    _pkg("gawk", "Provides: awk\n"),
]


def _resolve(**kw: object) -> Resolution:
    return resolve(PackageType.DEB, "amd64", BASE, {"main": AVAILABLE},
                   Request(**kw))  # type: ignore[arg-type]


def _names(res: Resolution) -> list[str]:
    return [p.name for p in res.install]


def test_the_first_installable_alternative_wins_as_in_apt() -> None:
    assert _names(_resolve(install=("app",))) == ["app", "app-doc", "zz-first"]
    assert _names(_resolve(install=("picky",))) == ["fallback", "picky"]


def test_recommends_are_installed_unless_no_recommends() -> None:
    assert _names(_resolve(install=("app",), no_recommends=True)) == ["app", "zz-first"]


def test_pre_depends_are_followed() -> None:
    assert _names(_resolve(install=("needs-pre",))) == ["needs-pre", "pre-thing"]


def test_a_virtual_name_with_several_providers_is_refused_naming_them() -> None:
    with pytest.raises(DepsolveError, match=r"cannot install mail-transport-agent: it is a "
                       r"virtual package provided by mta-a 1.0, mta-b 1.0"):
        _resolve(install=("mail-transport-agent",))


def test_a_virtual_name_with_one_provider_selects_it() -> None:
    assert _names(_resolve(install=("lonely-virtual",))) == ["only-one"]


def test_a_virtual_name_an_installed_package_provides_is_satisfied_by_the_base() -> None:
    res = _resolve(install=("awk",))
    assert res.empty and res.satisfied_by_base == ("awk",)


def test_essential_packages_and_their_dependencies_are_never_removed() -> None:
    with pytest.raises(DepsolveError, match="cannot remove bash: it is an Essential package"):
        _resolve(remove=("bash",))
    with pytest.raises(DepsolveError, match="cannot remove libtinfo6: the Essential package "
                       "bash depends on it"):
        _resolve(remove=("libtinfo6",))
    assert [p.name for p in _resolve(remove=("mawk",)).remove] == ["mawk"]


def _v(name: str, version: str, fields: str = "", *, installed: bool = False) -> PackageMeta:
    text = f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n{fields}"
    return meta_from_control(text, origin=Origin.INSTALLED if installed else Origin.CATALOGUE)


def test_a_base_package_too_old_for_an_added_one_is_upgraded_as_apt_does() -> None:
    base = [_v("thing", "1.0", installed=True), _v("libc6", "1.0", installed=True)]
    available = [_v("thing", "2.1~rc1", "Depends: libc6\n"), _v("thing", "2.0"),
                 _v("libc6", "2.0"), _v("needs-thing", "1", "Depends: thing (>= 2.0)\n"),
                 _v("any-thing", "1", "Depends: thing, libc6\n")]
    res = resolve(PackageType.DEB, "amd64", base, {"main": available},
                  Request(install=("needs-thing",)))
    # apt's candidate is the newest version; libc6 is satisfied and stays
    assert [(p.name, p.evr) for p in res.install] == [("needs-thing", "1"), ("thing", "2.1~rc1")]
    assert [(p.name, p.evr) for p in res.remove] == [("thing", "1.0")]
    res = resolve(PackageType.DEB, "amd64", base, {"main": available},
                  Request(install=("any-thing",)))
    assert [p.name for p in res.install] == ["any-thing"] and not res.remove
    held = [*base, _v("holder", "1", "Depends: thing (<< 2.0)\n", installed=True)]
    with pytest.raises(DepsolveError):
        resolve(PackageType.DEB, "amd64", held, {"main": available},
                Request(install=("needs-thing",)))
