"""strata's rpm install order against the real ``rpm -i`` for sets with dependency loops.

Each set of tests/layering/rpmshapes.py (named shapes and seeded random ones) is built by
``rpmbuild`` (packages cached by spec under the test cache, rebuilt when missing) and
installed by ``rpm --root EMPTY -i`` given by file name; the packages' Lua ``%post`` logs
the order rpm ran them in. strata's :func:`layering.rpmorder.install_order` of the
packages' own headers must give that order, and for a named shape rpm must still give the
order the fast unit tests pin (tests/layering/test_rpmorder_cycles.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fixtures.rpmimages import DBPATH, build
from importers import read_package
from layering.rpmorder import install_order
from tests.layering.realworld import cache_root
from tests.layering.rpmshapes import RPM_ORDERS, SHAPES, Shape, random_shape, spec_of
from tests.util import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

# seeds where the former order (loops appended in input order) differed from rpm; the first
# 150 seeds (STRATA_RPMORDER_SEEDS=150) all agreed with rpm 4.18.0
RANDOM_SEEDS = tuple(range(int(os.environ["STRATA_RPMORDER_SEEDS"]))) \
    if os.environ.get("STRATA_RPMORDER_SEEDS") else (0, 2, 4, 11, 29, 40)


def _rpm_order(shape: Shape, root: Path) -> tuple[list[str], list[str]]:
    """(the order rpm -i ran the set's %post in, strata's order of the same files)."""
    require_tool("rpm", "rpmbuild")
    if os.geteuid() != 0:
        pytest.skip("rpm runs the Lua %post chrooted into the root: needs root")
    cache = cache_root() / "rpm-order"
    rpms = sorted((build(spec_of(n, lines), cache) for n, lines in shape.items()),
                  key=lambda p: p.name)
    root.mkdir()
    proc = subprocess.run(["rpm", "--root", str(root), "--dbpath", DBPATH, "-i",
                           *map(str, rpms)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    strata = [p.name for p in install_order([read_package(r) for r in rpms])]
    return (root / "order.log").read_text().split(), strata


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_named_shape_in_rpms_order(name: str, tmp_path: Path) -> None:
    rpm, strata = _rpm_order(SHAPES[name], tmp_path / "root")
    assert rpm == RPM_ORDERS[name]  # the pinned orders are still rpm's
    assert strata == rpm


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_shape_in_rpms_order(seed: int, tmp_path: Path) -> None:
    rpm, strata = _rpm_order(random_shape(seed), tmp_path / "root")
    assert strata == rpm, random_shape(seed)


# a path dependency on /bin/zzx that b satisfies with /usr/bin/zzx: rpm compares directory
# fingerprints on the filesystem it runs on (the host's /bin -> usr/bin for rpm --root)
FINGERPRINT_SHAPE: Shape = {"a": ("Requires: /bin/zzx",), "b": ("File: /usr/bin/zzx",
                                                               "Requires: c"),
                            "c": ("Requires: a",)}


@pytest.mark.xfail(strict=True, reason="strata compares paths literally: resolving them "
                   "through the host's symlinks as rpm does would read the host for a package")
def test_path_dependency_through_a_symlinked_directory(tmp_path: Path) -> None:
    if os.path.realpath("/bin") != "/usr/bin":
        pytest.skip("the host's /bin is not a symlink to usr/bin: rpm -i refuses the set")
    rpm, strata = _rpm_order(FINGERPRINT_SHAPE, tmp_path / "root")
    assert rpm == ["b", "a", "c"]
    assert strata == rpm
