"""Three deployments of a ~200 MB image with small differences cost about one copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boot.deploy import deploy, os_init
from boot.sysroot import Sysroot
from tests.boot.conftest import make_tree, ostree_commit

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def unique_bytes(*roots: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def test_three_deployments_share_storage(work: Path) -> None:
    s = Sysroot(work / "sysroot")
    os_init(s, "testos")
    blob = os.urandom(2 << 20)
    base = {f"usr/share/big/f{i:03d}": blob[i:] + bytes([i]) for i in range(100)}
    image = sum(len(v) for v in base.values())
    assert image > 190 << 20
    for v in (1, 2, 3):
        files = {**base, "usr/share/big/f000": f"changed in v{v}\n".encode() * 1000}
        ostree_commit(s.repo_path, make_tree(work / f"v{v}", version=str(v), files=files),
                      "os/x", 1700000000 + v)
        deploy(s, refspec="os/x")
        if v == 1:
            one = unique_bytes(s.path)
    deploy_dirs = [s.deployment_dir(d) for d in s.load().deployments]
    assert len(deploy_dirs) == 2  # retention: default + rollback
    from boot.admin import pin
    pin(s, 1)
    ostree_commit(s.repo_path, make_tree(work / "v4", files=base), "os/x", 1700000004)
    deploy(s, refspec="os/x")
    assert len(s.load().deployments) == 3
    three = unique_bytes(s.path)
    assert three < one * 1.05, (one, three)
    assert one < image * 1.05
