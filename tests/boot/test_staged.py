"""Staged deployments and the read-only sysroot, on a booted host's view of a test sysroot
(:mod:`tests.boot.booted`): written now, finalized at shutdown with /etc as it is then;
lost with /run on a crash and cleaned up by the next run; strata's private writable view
of a read-only sysroot leaves the caller's mount read-only."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from boot.deploy import deploy, os_init
from boot.errors import SysrootError
from boot.sysroot import Sysroot
from tests.boot.booted import BootedHost
from tests.boot.conftest import make_tree, ostree_admin, ostree_commit
from tests.util import run_strata

pytestmark = pytest.mark.integration


def _host(work: Path) -> tuple[Sysroot, BootedHost, str, str]:
    """A sysroot with v1 deployed and booted, v2 committed on os/x."""
    s = Sysroot(work / "sysroot")
    os_init(s, "testos")
    c1 = ostree_commit(s.repo_path, make_tree(work / "v1"), "os/x", 1700000001)
    deploy(s, refspec="os/x")
    c2 = ostree_commit(s.repo_path, make_tree(work / "v2", version="2", kernel=b"k2"), "os/x",
                       1700000002)
    host = BootedHost(s.path, work)
    host.boot(_cmdline(s))
    return s, host, c1, c2


def _cmdline(s: Sysroot) -> str:
    (_, entry), *_ = s.read_entries(s.bootversion())
    return entry.get("options") or ""


def _entries(s: Sysroot) -> dict[str, bytes]:
    loader = s.boot / "loader" / "entries"
    return {p.name: p.read_bytes() for p in sorted(loader.iterdir())} | {
        "->": os.readlink(s.boot / "loader").encode()}


def _deploy_dirs(s: Sysroot) -> list[str]:
    return sorted(p.name for p in (s.stateroot_dir("testos") / "deploy").iterdir())


def _status(host: BootedHost) -> list[dict[str, object]]:
    out = json.loads(host.strata("status", "--json").stdout)["deployments"]
    assert isinstance(out, list)
    return out


def test_stage_keeps_etc_edits_made_before_shutdown(work: Path) -> None:
    s, host, c1, c2 = _host(work)
    booted = s.deployment_dir(s.load().deployments[0])
    (booted / "etc/motd").write_text("edited before\n")
    before = _entries(s)
    out = host.strata("deploy", "--stage", "os/x")
    assert out.stdout.strip() == f"{c2}.0"
    assert _entries(s) == before  # nothing boots it yet
    assert "start --quiet strata-finalize-staged.service" in (
        host.run_dir / "systemctl.log").read_text()
    rows = _status(host)
    assert [(r["checksum"], r["index"], r["staged"], r["booted"], r["default"]) for r in rows] \
        == [(c2, 0, True, False, False), (c1, 1, False, True, True)]
    assert "(staged)" in host.strata("status").stdout
    # the admin keeps editing /etc after the install, before the reboot
    (booted / "etc/motd").write_text("edited after\n")
    (booted / "etc/added-after").write_text("new file\n")
    fin = host.strata("finalize-staged")
    assert fin.stdout.startswith(f"finalized {c2}.0")
    state = s.load()
    assert [d.checksum for d in state.deployments] == [c2, c1]
    new = s.deployment_dir(state.deployments[0])
    assert (new / "etc/motd").read_text() == "edited after\n"
    assert (new / "etc/added-after").read_text() == "new file\n"
    assert (new / "usr/bin/tool").read_text() == "tool 2\n"
    assert not (host.run_dir / "strata/staged-deployment").exists()
    assert [r["staged"] for r in _status(host)] == [False, False]
    assert host.strata("finalize-staged").stdout.strip() == "no staged deployment"
    ostree_admin("status", f"--sysroot={s.path}")  # the real ostree reads what finalize wrote


def test_crash_before_finalize_loses_the_staged_deployment(work: Path) -> None:
    s, host, c1, _c2 = _host(work)
    before, dirs = _entries(s), _deploy_dirs(s)
    kernels = sorted(p.name for p in (s.boot / "ostree").iterdir())
    host.strata("deploy", "--stage", "os/x")
    assert len(_deploy_dirs(s)) == len(dirs) + 2  # tree and .origin
    assert len(list((s.boot / "ostree").iterdir())) == len(kernels) + 1
    host.boot(_cmdline(s))  # power cut: no finalize, /run is gone
    assert _entries(s) == before
    assert [r["checksum"] for r in _status(host)] == [c1]
    host.strata("cleanup")
    assert _deploy_dirs(s) == dirs
    assert sorted(p.name for p in (s.boot / "ostree").iterdir()) == kernels
    assert _entries(s) == before


@pytest.mark.parametrize("point", ["after-etc-merge", "before-swap"])
def test_killed_finalize_boots_the_old_default(work: Path, point: str) -> None:
    s, host, c1, c2 = _host(work)
    before, dirs = _entries(s), _deploy_dirs(s)
    host.strata("deploy", "--stage", "os/x")
    proc = host.strata("finalize-staged", check=False, env={"STRATA_TEST_FAIL_AT": point})
    assert proc.returncode == 1
    assert _entries(s) == before
    assert not (host.run_dir / "strata/staged-deployment").exists()
    assert [r["checksum"] for r in _status(host)] == [c1]
    host.strata("cleanup")
    assert _deploy_dirs(s) == dirs
    assert host.strata("deploy", "os/x").stdout.strip().startswith(c2)


def test_second_stage_replaces_the_first(work: Path) -> None:
    s, host, c1, c2 = _host(work)
    host.strata("deploy", "--stage", "os/x")
    c3 = ostree_commit(s.repo_path, make_tree(work / "v3", version="3"), "os/x", 1700000003)
    host.strata("deploy", "--stage", "os/x")
    names = _deploy_dirs(s)
    assert f"{c3}.0" in names and f"{c2}.0" not in names
    assert [r["checksum"] for r in _status(host)] == [c3, c1]
    assert "strata/staged" in run_strata("--repo", s.repo_path, "refs").stdout
    host.strata("finalize-staged")
    assert [d.checksum for d in s.load().deployments] == [c3, c1]


def test_rollback_refused_cleanup_pending_and_direct_deploy_drop_it(work: Path) -> None:
    s, host, c1, c2 = _host(work)
    dirs = _deploy_dirs(s)
    host.strata("deploy", "--stage", "os/x")
    proc = host.strata("rollback", check=False)
    assert proc.returncode == 1 and "cleanup --pending" in proc.stderr
    assert host.strata("pin", "0", check=False).returncode == 1
    host.strata("cleanup", "--pending")
    assert _deploy_dirs(s) == dirs and [r["checksum"] for r in _status(host)] == [c1]
    host.strata("deploy", "--stage", "os/x")
    host.strata("deploy", "os/x")  # written now: the staged one is dropped, as ostree does
    assert [(r["checksum"], r["staged"]) for r in _status(host)] == [(c2, False), (c1, False)]
    assert not (host.run_dir / "strata/staged-deployment").exists()
    assert len(_deploy_dirs(s)) == len(dirs) + 2


def test_stage_needs_the_booted_host(work: Path) -> None:
    s, host, _c1, _c2 = _host(work)
    dirs, before = _deploy_dirs(s), _entries(s)
    proc = run_strata("--sysroot", s.path, "deploy", "--stage", "os/x", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot stage a deployment") and "booted" in proc.stderr
    # the finalize service does not start: --stage fails, nothing is written
    proc = host.strata("deploy", "--stage", "os/x", check=False, systemctl_rc=5)
    assert proc.returncode == 1 and "strata-finalize-staged.service" in proc.stderr
    assert _deploy_dirs(s) == dirs and _entries(s) == before


def test_auto_mode_stages_only_where_the_finalize_service_starts(work: Path) -> None:
    s, host, _c1, _c2 = _host(work)
    probe = (f"{sys.executable} -c 'from pathlib import Path; from boot.sysroot import Sysroot; "
             "from boot.stage import StageMode, should_stage; "
             "print(should_stage(Sysroot(Path(\"/\")), StageMode.AUTO))'")
    assert host.sh(probe).stdout.strip() == "True"
    assert host.sh(probe, systemctl_rc=5).stdout.strip() == "False"
    from boot.stage import StageMode, should_stage

    assert should_stage(s, StageMode.AUTO) is False  # not the running host: deploy directly


def test_readonly_sysroot_is_made_writable_privately(work: Path) -> None:
    s, host, c1, c2 = _host(work)
    check = "findmnt -no OPTIONS / | cut -d, -f1; touch /ostree/x 2>/dev/null || echo ro-ok"
    script = (f"{check}; strata pin 0 && strata deploy --stage os/x && "
              f"strata finalize-staged && echo done; {check}")
    proc = host.sh(script, readonly=True)
    assert proc.stdout.splitlines() == [
        "ro", "ro-ok", "deployment 0 is pinned", f"{c2}.0",
        f"finalized {c2}.0: /etc changes carried: 0 modified, 0 removed, 0 added",
        "done", "ro", "ro-ok"], proc.stderr
    assert [d.dirname for d in s.load().deployments] == [f"{c2}.0", f"{c1}.0"]


def test_staged_record_round_trip_and_refusals() -> None:
    from boot.staged import StagedRecord

    rec = StagedRecord("os", "a" * 64, 3, "b" * 64, ("root=/dev/vda", "rw"),
                       ("os", "c" * 64, 0))
    assert StagedRecord.from_dict(json.loads(json.dumps(rec.to_dict())), source="t") == rec
    rec = replace(rec, merge_var=True)
    assert StagedRecord.from_dict(json.loads(json.dumps(rec.to_dict())), source="t") == rec
    good = rec.to_dict()
    bads: list[object] = [{**good, "extra": 1}, {**good, "stateroot": "../x"},
                          {**good, "serial": -1}, {**good, "kargs": "rw"},
                          {**good, "merge": {"stateroot": "os"}}, {**good, "merge_var": 1}, []]
    for bad in bads:
        with pytest.raises(SysrootError):
            StagedRecord.from_dict(bad, source="t")


def test_staged_layering_carries_var_files_at_finalize_not_before(work: Path) -> None:
    """A layering deploy's /var carry (boot.varcarry) belongs to the moment the deployment
    becomes the default: staged, the host's /var is untouched until finalize, which then
    brings the changed files in (and keeps what the host edited meanwhile)."""
    s = Sysroot(work / "sysroot")
    os_init(s, "testos")
    files = {"var/lib/pam/seen": "unix\n", "var/lib/pam/auth": "unix\n"}
    ostree_commit(s.repo_path, make_tree(work / "v1", files=files), "os/x", 1700000001)
    deploy(s, refspec="os/x")
    c2 = ostree_commit(s.repo_path, make_tree(work / "v2", version="2", files={
        "var/lib/pam/seen": "unix\nsystemd\n", "var/lib/pam/auth": "unix\nsystemd\n"}),
        "os/x", 1700000002)
    host = BootedHost(s.path, work)
    host.boot(_cmdline(s))
    var = s.stateroot_dir("testos") / "var"
    stage = (f"{sys.executable} -c 'from pathlib import Path; from boot.sysroot import Sysroot; "
             "from boot.stage import stage; "
             "print(stage(Sysroot(Path(\"/\")), refspec=\"os/x\", merge_var=True).staged)'")
    assert host.sh(stage).stdout.strip() == "True"
    assert (var / "lib/pam/seen").read_text() == "unix\n"  # not before the switch
    (var / "lib/pam/auth").write_text("unix\nedited after the install\n")
    host.strata("finalize-staged")
    assert s.load().deployments[0].checksum == c2
    assert (var / "lib/pam/seen").read_text() == "unix\nsystemd\n"
    assert (var / "lib/pam/auth").read_text() == "unix\nedited after the install\n"
