"""Real Debian packages (jq and its libraries) composed onto a real mmdebstrap minbase."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.images import apt_repo
from layering.compose import ComposeRequest, compose
from store.checkout import checkout
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.layering.realworld import build_minbase, download_debs
from tests.store.servers import http_server
from tests.util import require_tool, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def minbase_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Repo, str]:
    require_tool("mmdebstrap", "apt-get")
    tmp = tmp_path_factory.mktemp("minbase")
    rootfs = build_minbase(tmp / "rootfs")
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    result = commit_directory(repo, rootfs, branch="debian/bookworm/minbase")
    assert result.skipped == ()  # build_minbase leaves /dev empty, as an image has it
    shutil.rmtree(rootfs)
    return repo, result.checksum


def test_jq_from_real_debs_runs_in_the_new_image(minbase_repo: tuple[Repo, str],
                                                   tmp_path: Path) -> None:
    require_tool("bwrap", "apt-ftparchive")
    repo, base = minbase_repo
    debs = download_debs(["jq", "libjq1", "libonig5", "ca-certificates", "openssl", "libssl3"],
                         tmp_path / "debs")
    apt_repo(tmp_path / "apt", debs)
    with http_server(tmp_path / "apt") as served:
        r = compose(repo, ComposeRequest(base=base, branch="debian/bookworm/jq",
                                         install=("jq", "ca-certificates"),
                                         sources=(f"deb [trusted=yes] {served.url} stable main",)))
    assert sorted(p.name for p in r.resolution.install) == [
        "ca-certificates", "jq", "libjq1", "libonig5", "libssl3", "openssl"]
    co = tmp_path / "co"
    checkout(repo, r.checksum, co)  # type: ignore[arg-type]
    proc = subprocess.run(["bwrap", "--bind", co, "/", "--ro-bind", co / "usr/etc", "/etc",
                           "--proc", "/proc", "--dev", "/dev", "--unshare-all",
                           "/usr/bin/jq", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("jq-1.6"), proc.stderr
    assert b"libjq.so.1" in (co / "usr/etc/ld.so.cache").read_bytes()  # the ldconfig trigger ran
    # ca-certificates' postinst uses debconf (templates + config beside the script, as dpkg)
    bundle = (co / "usr/etc/ssl/certs/ca-certificates.crt").read_text()
    assert bundle.count("BEGIN CERTIFICATE") > 100
    admindir = co / "usr/lib/sysimage/dpkg"
    shutil.copytree(co / "usr/etc", co / "etc", symlinks=True, dirs_exist_ok=True)
    verify = run(["dpkg", f"--root={co}", f"--admindir={admindir}", "--verify", "jq", "libjq1",
                  "libonig5"])
    assert verify.stdout == ""
    listed = run(["dpkg-query", f"--admindir={admindir}", "-W", "-f", "${Package}\\n"]).stdout
    assert {"jq", "libjq1", "libonig5", "dpkg", "libc6"} <= set(listed.split())


def test_real_postinsts_create_system_users_and_chown(minbase_repo: tuple[Repo, str],
                                                      tmp_path: Path) -> None:
    """uuid-runtime's postinst runs ``addgroup --system``, ``adduser --system`` and
    ``chown uuidd:uuidd``; openssh-client's runs ``addgroup --system _ssh``,
    ``dpkg-statoverride --list`` and ``chgrp _ssh`` (both failed in a user namespace)."""
    require_tool("bwrap", "apt-ftparchive")
    repo, base = minbase_repo
    debs = download_debs(USER_DEBS, tmp_path / "debs")
    apt_repo(tmp_path / "apt", debs)
    with http_server(tmp_path / "apt") as served:
        r = compose(repo, ComposeRequest(base=base, branch="debian/bookworm/users",
                                         install=("uuid-runtime", "openssh-client"),
                                         sources=(f"deb [trusted=yes] {served.url} stable main",)))
    co = tmp_path / "co"
    checkout(repo, r.checksum, co)  # type: ignore[arg-type]
    group = {line.split(":")[0]: int(line.split(":")[2])
             for line in (co / "usr/etc/group").read_text().splitlines()}
    users = {line.split(":")[0]: int(line.split(":")[2])
             for line in (co / "usr/etc/passwd").read_text().splitlines()}
    assert "uuidd" in users and "uuidd" in group and "_ssh" in group
    assert 100 <= users["uuidd"] < 1000  # a system user, as adduser --system makes
    assert "uuidd:" in (co / "usr/etc/shadow").read_text()
    assert "_ssh:" in (co / "usr/etc/gshadow").read_text()
    st = (co / "var/lib/libuuid").lstat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (users["uuidd"], group["uuidd"], 0o2775)
    agent = (co / "usr/bin/ssh-agent").lstat()
    assert (agent.st_gid, agent.st_mode & 0o7777) == (group["_ssh"], 0o2755)
    run(["ostree", "fsck", f"--repo={repo.path}"])


USER_DEBS = ["uuid-runtime", "adduser", "openssh-client", "libedit2", "libfido2-1", "libcbor0.8",
             "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libkeyutils1",
             "libcom-err2", "libssl3", "libbsd0"]
