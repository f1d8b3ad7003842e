"""The sysroot commands through the real `strata` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.boot.conftest import make_tree, ostree_commit
from tests.util import StrataRunner

pytestmark = pytest.mark.integration

STATUS_KEYS = ["index", "stateroot", "checksum", "base-checksum", "origin", "requested-packages",
               "requested-local-packages", "layered-packages", "removed-base-packages",
               "replaced-base-packages", "pinned", "default", "booted", "staged", "timestamp",
               "version"]


def test_cli_lifecycle(work: Path, strata: StrataRunner) -> None:
    s = work / "sysroot"
    strata("--sysroot", s, "os-init", "testos")
    assert (s / "ostree/deploy/testos/var").is_dir() and (s / "ostree/repo/config").is_file()
    c1 = ostree_commit(s / "ostree/repo", make_tree(work / "v1"), "os/x", 1700000001)
    out = strata("--sysroot", s, "deploy", "--karg", "quiet", "os/x").stdout
    assert out.strip() == f"{c1}.0"
    c2 = ostree_commit(s / "ostree/repo", make_tree(work / "v2", version="2"), "os/x", 1700000002)
    strata("--sysroot", s, "deploy", "os/x")
    data = json.loads(strata("--sysroot", s, "status", "--json").stdout)
    rows = data["deployments"]
    assert [r["checksum"] for r in rows] == [c2, c1]
    for r in rows:
        assert list(r) == STATUS_KEYS
        assert r["layered-packages"] == [] and r["requested-packages"] == []
    assert rows[0]["default"] and not rows[1]["default"]
    assert json.loads(strata("--sysroot", s, "--json", "status").stdout) == data
    text = strata("--sysroot", s, "status").stdout
    assert text.index(c2) < text.index(c1) and "Origin: os/x" in text

    assert strata("--sysroot", s, "kargs").stdout.strip() == "quiet"
    strata("--sysroot", s, "pin", "1")
    assert json.loads(strata("--sysroot", s, "status", "--json").stdout)[
        "deployments"][1]["pinned"] is True
    strata("--sysroot", s, "pin", "--unpin", "1")
    assert strata("--sysroot", s, "rollback").stdout.strip() == f"{c1}.0"
    strata("--sysroot", s, "rollback")
    out = strata("--sysroot", s, "cleanup", "--rollback").stdout
    assert f"removed {c1}.0" in out
    rows = json.loads(strata("--sysroot", s, "status", "--json").stdout)["deployments"]
    assert [r["checksum"] for r in rows] == [c2]


def test_cli_errors(work: Path, strata: StrataRunner) -> None:
    s = work / "sysroot"
    strata("--sysroot", s, "os-init", "testos")
    tree = make_tree(work / "nok")
    os.unlink(tree / "usr/lib/modules/6.1.0-test/vmlinuz")
    ostree_commit(s / "ostree/repo", tree, "os/nok")
    p = strata("--sysroot", s, "deploy", "os/nok", check=False)
    assert p.returncode == 1 and p.stderr.startswith("error: no kernel in ")
    assert "Traceback" not in p.stderr
    p = strata("--sysroot", s, "deploy", "os/missing", check=False)
    assert p.returncode == 1 and "os/missing" in p.stderr
    p = strata("--sysroot", s, "rollback", check=False)
    assert p.returncode == 1 and "no rollback" in p.stderr
    p = strata("--sysroot", s, "pin", "3", check=False)
    assert p.returncode == 1 and "index 3" in p.stderr
    p = strata("--sysroot", work / "nothing", "status", check=False)
    assert p.returncode == 1 and "not a sysroot" in p.stderr


def test_cli_dry_run_reports_carried_changes_and_conflicts(
        work: Path, strata: StrataRunner) -> None:
    s = work / "sysroot"
    strata("--sysroot", s, "os-init", "testos")
    repo = s / "ostree/repo"
    ostree_commit(repo, make_tree(work / "v1", etc={"a.conf": "a1\n", "b.conf": "b1\n"}), "os/x", 1)
    out = strata("--sysroot", s, "deploy", "os/x").stdout.strip()
    etc = s / "ostree/deploy/testos/deploy" / out / "etc"
    (etc / "a.conf").write_text("a-user\n")
    (etc / "b.conf").write_text("b-user\n")
    (etc / "new.conf").write_text("n\n")
    ostree_commit(repo, make_tree(work / "v2", etc={"a.conf": "a2\n", "b.conf": "b1\n"}), "os/x", 2)
    before = sorted(os.listdir(s / "ostree/deploy/testos/deploy"))
    lines = strata("--sysroot", s, "deploy", "--dry-run", "os/x").stdout.splitlines()
    assert "carried M /etc/a.conf" in lines and "carried M /etc/b.conf" in lines
    assert "carried A /etc/new.conf" in lines
    assert [ln for ln in lines if ln.startswith("conflict")] == [
        "conflict /etc/a.conf: changed by the new image, the local version is kept"]
    plan = json.loads(strata("--sysroot", s, "--json", "deploy", "--dry-run", "os/x").stdout)
    assert plan["conflicts"] == ["a.conf"]
    assert sorted(os.listdir(s / "ostree/deploy/testos/deploy")) == before
    assert not list((repo / "tmp").glob("strata-*"))
    real = strata("--sysroot", s, "deploy", "os/x")
    assert "note: /etc/a.conf also changed in the new image; the local version is kept" \
        in real.stderr
    new_etc = s / "ostree/deploy/testos/deploy" / real.stdout.strip() / "etc"
    assert (new_etc / "a.conf").read_text() == "a-user\n"
