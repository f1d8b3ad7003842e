"""Host state across install, uninstall and rollback: users, identity files, /var ownership.

A package whose postinst creates a system user (first free id from 100, as
``adduser --system``), generates a host key when none exists (as
``ssh-keygen -A``) and chowns a /var directory to its user (as nginx does with
``/var/log/nginx``), layered on a host whose admin added ``alice`` (id 100).
The /var check uses the real ``systemd-tmpfiles`` over the deployment and a copy
of the existing stateroot's /var, as the first boot does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from boot.hostfiles import merge_db
from fixtures.images import apt_repo, build_deb, deb_base_rootfs, ostree_layout
from store.commit import commit_directory
from store.repo import Repo
from tests.layering.corpus_sides import boot_tmpfiles
from tests.store.servers import http_server
from tests.util import require_tool, run, run_strata

POSTINST = """#!/bin/sh
set -e
bb=/usr/bin/busybox
grep -q '^alice:' /etc/passwd && echo yes > /var/lib/svc/saw-alice || echo no > /var/lib/svc/saw-alice
if ! grep -q '^svc:' /etc/passwd; then
  uid=100
  while grep -q "^[^:]*:[^:]*:$uid:" /etc/passwd; do uid=$((uid + 1)); done
  echo "svc:x:$uid:$uid:svc:/var/lib/svc:/bin/false" >> /etc/passwd
  echo "svc:x:$uid:" >> /etc/group
  echo "svc:!:19000:0:99999:7:::" >> /etc/shadow
fi
mkdir -p /etc/ssh /var/log/svc
[ -e /etc/ssh/ssh_host_test_key ] || $bb head -c 32 /dev/urandom > /etc/ssh/ssh_host_test_key
chmod 2750 /var/log/svc
chmod 0750 /var/lib/svc
"""


@dataclass
class Host:
    sysroot: Path
    repo: Repo

    def strata(self, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_strata("--sysroot", self.sysroot, *args, check=check)  # type: ignore[arg-type]

    def deploy_dir(self, index: int = 0) -> Path:
        from boot.sysroot import Sysroot

        sysroot = Sysroot(self.sysroot)
        return sysroot.deployment_dir(sysroot.load().deployments[index])

    def commit_of(self, index: int = 0) -> str:
        return json.loads(self.strata("status", "--json").stdout)["deployments"][index]["checksum"]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    require_tool("dpkg-deb", "apt-ftparchive", "bwrap")
    chown = "$bb chown svc:svc /var/lib/svc /var/log/svc\n"
    debs = [build_deb(tmp_path / "debs", "svc", "1.0", files={"var/lib/svc/README": b"svc\n"},
                      scripts={"postinst": POSTINST}),
            build_deb(tmp_path / "debs", "svc-owner", "1.0", scripts={"postinst": POSTINST + chown},
                      files={"var/lib/svc/README": b"svc\n"}),
            build_deb(tmp_path / "debs", "other", "1.0", files={"usr/share/other": b"o\n"})]
    apt_repo(tmp_path / "apt", debs)
    root = deb_base_rootfs(tmp_path / "rootfs")
    (root / "etc/group").write_text("root:x:0:\ndaemon:x:1:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    ostree_layout(root)
    sysroot = tmp_path / "sysroot"
    run_strata("--sysroot", sysroot, "os-init", "test")
    repo = Repo.open(sysroot / "ostree/repo")
    commit_directory(repo, root, branch="os/stable")
    with http_server(tmp_path / "apt") as served:
        h = Host(sysroot, repo)
        h.strata("deploy", "os/stable")
        etc = h.deploy_dir() / "etc"
        (etc / "apt/sources.list.d/local.list").write_text(
            f"deb [trusted=yes] {served.url} stable main\n")
        with open(etc / "passwd", "a") as f:  # the admin's useradd alice
            f.write("alice:x:100:100:Alice:/home/alice:/bin/sh\n")
        with open(etc / "group", "a") as f:
            f.write("alice:x:100:\n")
        yield h
    subprocess.run(["chattr", "-R", "-i", sysroot], capture_output=True)


def _users(etc: Path) -> dict[str, str]:
    return {line.split(":")[0]: line.split(":")[2]
            for line in (etc / "passwd").read_text().splitlines()}


def test_scripts_see_the_hosts_users_and_both_kinds_of_user_survive(host: Host) -> None:
    proc = host.strata("install", "svc")
    assert "passwd" not in proc.stdout + proc.stderr  # no "your version is kept"
    new = host.deploy_dir()
    assert (new / "var/lib/svc/saw-alice").read_text() == "yes\n"
    users = _users(new / "etc")
    assert users["alice"] == "100" and users["svc"] == "101"
    assert "svc:x:101:" in (new / "etc/group").read_text()
    assert "alice:x:100:" in (new / "etc/group").read_text()
    assert [line for line in (new / "etc/shadow").read_text().splitlines()
            if line.startswith("svc:")] == ["svc:!:19000:0:99999:7:::"]
    image = (new / "usr/etc/passwd").read_text()  # the host's entries stay out of the commit
    assert "alice" not in image and "svc:x:101:" in image
    host.strata("install", "other")  # svc's postinst runs again: same id, nothing doubled
    users = _users(host.deploy_dir() / "etc")
    assert users["alice"] == "100" and users["svc"] == "101"
    lines = (host.deploy_dir() / "etc/passwd").read_text().splitlines()
    assert [line for line in lines if line.startswith("svc:")] == [
        "svc:x:101:101:svc:/var/lib/svc:/bin/false"]


def test_host_keys_stay_byte_identical(host: Host) -> None:
    host.strata("install", "svc")
    key = (host.deploy_dir() / "etc/ssh/ssh_host_test_key").read_bytes()
    assert len(key) == 32
    host.strata("install", "other")
    assert (host.deploy_dir() / "etc/ssh/ssh_host_test_key").read_bytes() == key
    assert not (host.deploy_dir() / "usr/etc/ssh/ssh_host_test_key").exists()  # not in the image
    host.strata("uninstall", "svc")
    assert (host.deploy_dir() / "etc/ssh/ssh_host_test_key").read_bytes() == key
    host.strata("rollback")
    assert (host.deploy_dir() / "etc/ssh/ssh_host_test_key").read_bytes() == key


def _booted_var(host: Host, tmp_path: Path) -> Path:
    """The existing stateroot's /var after the first boot of the default deployment."""
    var = tmp_path / "booted-var"
    run(["cp", "-a", host.sysroot / "ostree/deploy/test/var", var])
    assert not (var / "log/svc").exists()
    boot_tmpfiles(host.deploy_dir(), var, tmp_path / "mnt")
    return var


def test_var_directories_get_the_scripts_mode_on_an_existing_stateroot(host: Host,
                                                                       tmp_path: Path) -> None:
    require_tool("systemd-tmpfiles")
    host.strata("install", "svc")
    new = host.deploy_dir()
    conf = (new / "usr/lib/tmpfiles.d/strata-pkg-svc.conf").read_text()
    assert "d /var/lib/svc 0750 0 0 - -" in conf
    assert "C /var/lib/svc/saw-alice" not in conf  # made by the script, not the package
    scripts = (new / "usr/lib/tmpfiles.d/strata-scripts.conf").read_text()
    assert "d /var/log/svc 2750 0 0 - -" in scripts
    assert "C /var/lib/svc/saw-alice - - - - /usr/share/factory/var/lib/svc/saw-alice" in scripts
    var = _booted_var(host, tmp_path)
    for rel, mode in (("log/svc", 0o2750), ("lib/svc", 0o750)):
        assert (var / rel).stat().st_mode & 0o7777 == mode, rel
    assert (var / "lib/svc/README").read_text() == "svc\n"
    assert (var / "lib/svc/saw-alice").read_text() == "yes\n"


def test_var_directories_get_the_scripts_owner_on_an_existing_stateroot(
        host: Host, tmp_path: Path) -> None:
    require_tool("systemd-tmpfiles")
    host.strata("install", "svc-owner")
    conf = (host.deploy_dir() / "usr/lib/tmpfiles.d/strata-scripts.conf").read_text()
    assert "d /var/log/svc 2750 101 101 - -" in conf
    var = _booted_var(host, tmp_path)
    for rel, mode in (("log/svc", 0o2750), ("lib/svc", 0o750)):
        st = (var / rel).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (101, 101, mode), rel


def test_merge_db_keeps_the_hosts_entries_and_adds_the_images_new_ones() -> None:
    old = b"root:x:0:\nadm:x:4:\n"
    new = b"root:x:0:\nadm:x:4:syslog\nsyslog:x:110:\n"
    host = b"root:x:0:\nadm:x:4:alice\nalice:x:1000:\n"
    assert merge_db("group", old, host, new) == (
        b"root:x:0:\nadm:x:4:alice,syslog\nalice:x:1000:\nsyslog:x:110:\n")
    # an entry the admin deleted is not brought back; one the image dropped is kept
    assert merge_db("passwd", b"root:x:0:0::/:/bin/sh\ngone:x:5:5::/:/bin/false\n",
                    b"root:x:0:0::/:/bin/sh\n", b"root:x:0:0::/:/bin/sh\ngone:x:5:5::/:/bin/false\n"
                    ) == b"root:x:0:0::/:/bin/sh\n"
