"""The rpm-ostree-style client on a scratch sysroot: install, uninstall, override, upgrade,
rebase, rollback, /etc carried, cache reuse, crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import apt_repo, build_deb, deb_base_rootfs, ostree_layout
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.layering.conftest import fixture_debs
from tests.store.servers import Hook, Served, hostile_server, http_server
from tests.util import require_tool, run, run_strata


@dataclass
class Host:
    sysroot: Path
    repo: Repo
    source_line: str
    debs: list[Path]
    tmp: Path
    served: Served | None = None  # the fixture packages' apt server (a test may stop it)

    def strata(self, *args: object, check: bool = True, **kw: object):  # type: ignore[no-untyped-def]
        return run_strata("--sysroot", self.sysroot, *args, check=check, **kw)  # type: ignore[arg-type]

    def status(self) -> list[dict]:  # type: ignore[type-arg]
        return json.loads(self.strata("status", "--json").stdout)["deployments"]

    def deploy_dir(self, index: int = 0) -> Path:
        from boot.sysroot import Sysroot

        sysroot = Sysroot(self.sysroot)
        return sysroot.deployment_dir(sysroot.load().deployments[index])

    def commit_base(self, version: str, extra: dict[str, str] | None = None) -> str:
        root = deb_base_rootfs(self.tmp / f"rootfs-{version}-{time.monotonic_ns()}", version=version)
        for rel, text in (extra or {}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        ostree_layout(root)
        return commit_directory(self.repo, root, branch="os/stable",
                                metadata=[("version", version)]).checksum


def tree_hash(root: Path) -> str:
    """Every path, mode, owner, symlink target and content below ``root``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)} {st.st_mode:o} {st.st_uid} {st.st_gid}\n".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def make_host(sysroot: Path, tmp: Path, hook: Hook | None = None) -> Iterator[Host]:
    """A sysroot at ``sysroot`` with a deployed base and the fixture packages served as its
    apt source (by a hostile server calling ``hook``, when given); yields while served."""
    require_tool("dpkg-deb", "apt-ftparchive", "bwrap")
    debs = fixture_debs(tmp / "debs")
    apt_repo(tmp / "apt", debs)
    run_strata("--sysroot", sysroot, "os-init", "test")
    repo = Repo.open(sysroot / "ostree/repo")
    server = http_server(tmp / "apt") if hook is None else hostile_server(tmp / "apt", hook)
    with server as served:
        h = Host(sysroot, repo, f"deb [trusted=yes] {served.url} stable main", debs, tmp,
                 served)
        h.commit_base("1")
        h.strata("deploy", "os/stable")
        sources = h.deploy_dir() / "etc/apt/sources.list.d"
        sources.mkdir(parents=True, exist_ok=True)
        (sources / "local.list").write_text(h.source_line + "\n")
        yield h


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    yield from make_host(tmp_path / "sysroot", tmp_path)


def run_in(deployment: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bwrap", "--ro-bind", deployment, "/", "--proc", "/proc", "--dev", "/dev",
                           "--unshare-all", *argv], capture_output=True, text=True)


def test_install_new_default_previous_untouched_program_runs(host: Host) -> None:
    old = host.deploy_dir()
    before = tree_hash(old)
    out = host.strata("install", "hello").stdout
    assert out.startswith("4 packages layered (4 downloaded, 4 unpacked)") and "\nDeployed " in out
    st = host.status()
    assert len(st) == 2 and st[0]["default"] and st[0]["requested-packages"] == ["hello"]
    assert sorted(st[0]["layered-packages"]) == ["hello-2.10-3.amd64", "hello-doc-2.10-3.all",
                                                 "less-590-2.amd64", "libgreet-1.0-1.amd64"]
    assert st[1]["checksum"] == old.name.split(".")[0]
    assert tree_hash(old) == before
    new = host.deploy_dir()
    proc = run_in(new, "/usr/bin/hello")
    assert proc.stdout == "Hello, layered world!\n", proc.stderr
    assert (new / "etc/hello.d/postinst-mark").read_text() == "hello-postinst ran\n"
    assert (new / "etc/apt/sources.list.d/local.list").exists()
    origin = (new.parent / f"{new.name}.origin").read_text()
    assert "baserefspec=os/stable" in origin and "requested=hello;" in origin


def test_install_deployment_is_the_scripts_checkout_taken_over_and_equals_ostree_checkout(
        host: Host) -> None:
    host.strata("install", "hello")
    new = host.deploy_dir()
    assert not (host.repo.tmp_dir / "checkout").exists()  # taken over by the deployment
    require_tool("ostree")
    oracle = host.tmp / "oracle"
    run(["ostree", "checkout", f"--repo={host.repo.path}", "--subpath=/usr",
         new.name.split(".")[0], str(oracle)])
    assert tree_hash(new / "usr") == tree_hash(oracle)
    hello = (new / "usr/bin/hello").stat()
    assert hello.st_ino == (oracle / "bin/hello").stat().st_ino and hello.st_nlink >= 3


def test_failing_postinst_leaves_no_new_deployment(host: Host) -> None:
    before = host.status()
    proc = host.strata("install", "broken-post", check=False)
    assert proc.returncode == 1 and "postinst script of package broken-post failed" in proc.stderr
    assert host.status() == before


def test_local_file_install_and_uninstall(host: Host) -> None:
    deb = next(d for d in host.debs if d.name.startswith("clash-a"))
    host.strata("install", str(deb))
    st = host.status()[0]
    assert st["requested-local-packages"][0].endswith(":clash-a-1.0.all")
    assert (host.deploy_dir() / "usr/share/clash/file").read_text() == "from a\n"
    host.strata("uninstall", "clash-a")
    st = host.status()[0]
    assert st["requested-local-packages"] == [] and st["layered-packages"] == []
    assert not (host.deploy_dir() / "usr/share/clash/file").exists()


def test_upgrade_reapplies_layers_from_cache_and_carries_etc(host: Host) -> None:
    host.strata("install", "hello")
    etc = host.deploy_dir() / "etc"
    (etc / "hello.d/hello.conf").write_text("greeting=mine\n")
    (etc / "motd").unlink()
    (etc / "added-by-user").write_text("mine\n")
    assert host.strata("upgrade", "--check", check=False).returncode == 77
    host.commit_base("2", extra={"usr/share/new-in-2": "2\n"})
    assert host.strata("upgrade", "--check").returncode == 0
    out = host.strata("-v", "upgrade")
    assert "0 downloaded, 0 unpacked" in out.stderr or "downloaded" not in out.stderr
    new = host.deploy_dir()
    assert (new / "usr/share/new-in-2").exists() and (new / "usr/bin/hello").exists()
    assert (new / "etc/hello.d/hello.conf").read_text() == "greeting=mine\n"
    assert not (new / "etc/motd").exists() and (new / "etc/added-by-user").exists()
    assert host.status()[0]["version"] == "2"


def test_local_package_reapplied_on_upgrade_without_the_file(host: Host) -> None:
    deb = next(d for d in host.debs if d.name.startswith("clash-a"))
    copy = host.tmp / deb.name
    copy.write_bytes(deb.read_bytes())
    host.strata("install", str(copy))
    copy.unlink()
    host.commit_base("2")
    host.strata("upgrade")
    st = host.status()[0]
    assert st["version"] == "2" and st["requested-local-packages"][0].endswith(":clash-a-1.0.all")
    assert (host.deploy_dir() / "usr/share/clash/file").read_text() == "from a\n"


def test_upgrade_uses_only_the_cache(host: Host) -> None:
    from boot.sysroot import Sysroot
    from layering.client import ClientRequest, apply

    host.strata("install", "hello")
    host.commit_base("2")
    result = apply(Sysroot(host.sysroot), ClientRequest(upgrade=True))
    assert result.compose is not None
    assert result.compose.downloaded == 0 and result.compose.unpacked == 0
    assert len(result.compose.layers) == 4


def test_rebase_keeps_packages(host: Host) -> None:
    host.strata("install", "less")
    root = deb_base_rootfs(host.tmp / "other", version="other")
    ostree_layout(root)
    commit_directory(host.repo, root, branch="os/other", metadata=[("version", "other")])
    host.strata("rebase", "os/other")
    st = host.status()[0]
    assert st["origin"] == "os/other" and st["requested-packages"] == ["less"]
    assert (host.deploy_dir() / "usr/bin/less").exists()


def test_override_remove_and_reset(host: Host) -> None:
    host.strata("override", "remove", "dpkg")
    st = host.status()[0]
    assert st["removed-base-packages"] == ["dpkg-1.21.22.amd64"]
    listed = run(["dpkg-query", f"--admindir={host.deploy_dir() / 'usr/lib/sysimage/dpkg'}",
                  "-W", "-f", "${Package}\\n"]).stdout.split()
    assert "dpkg" not in listed
    host.strata("override", "reset", "dpkg")
    st = host.status()[0]
    assert st["removed-base-packages"] == [] and st["layered-packages"] == []


def test_override_replace_runs_dpkgs_upgrade_scripts(host: Host) -> None:
    log = "echo \"$DPKG_MAINTSCRIPT_NAME $*\" >> /usr/lib/base-files-upgrade.log\n"
    deb = build_deb(host.tmp, "base-files", "12.5", files={"etc/os-release-base": b"12.5\n"},
                    scripts={s: f"#!/bin/sh\n{log}" for s in ("preinst", "postinst")})
    host.strata("override", "replace", deb)
    assert host.status()[0]["replaced-base-packages"] == ["base-files-12.4.all"]
    assert (host.deploy_dir() / "usr/lib/base-files-upgrade.log").read_text() == (
        "preinst upgrade 12.4 12.5\npostinst configure 12.4\n")


def test_request_satisfied_by_base_is_shown_inactive(host: Host) -> None:
    host.strata("install", "--allow-inactive", "busybox", "less")
    text = host.strata("status").stdout
    assert "RequestedPackages: busybox less" in text
    assert "LayeredPackages: less-590-2.amd64" in text and "InactiveRequests: busybox" in text


def test_rollback_twice(host: Host) -> None:
    host.strata("install", "less")
    first = [d["checksum"] for d in host.status()]
    host.strata("rollback")
    assert [d["checksum"] for d in host.status()] == first[::-1]
    host.strata("rollback")
    assert [d["checksum"] for d in host.status()] == first


def test_dry_run_writes_nothing(host: Host) -> None:
    (host.deploy_dir() / "etc/motd").write_text("my motd\n")
    before = host.status()
    repo_before = sorted(p.name for p in (host.sysroot / "ostree/repo/refs/heads").rglob("*"))
    out = host.strata("install", "--dry-run", "hello").stdout
    assert "install hello 2.10-3 amd64" in out
    assert "/etc merge: keep your modified /etc/motd" in out
    assert host.status() == before
    assert sorted(p.name for p in (host.sysroot / "ostree/repo/refs/heads").rglob("*")) == \
        repo_before


def test_dry_run_of_a_local_file_writes_nothing(host: Host) -> None:
    deb = next(d for d in host.debs if d.name.startswith("clash-a"))
    repo = host.sysroot / "ostree/repo"

    def snapshot() -> list[str]:
        return sorted(str(p.relative_to(repo)) for p in repo.rglob("*")
                      if "tmp/cache/solv" not in str(p) and "tmp/cache/http" not in str(p))

    host.strata("install", "--dry-run", "hello")  # indexes fetched and cached once
    before, status = snapshot(), host.status()
    out = host.strata("install", "--dry-run", str(deb)).stdout
    assert "install clash-a 1.0 all" in out
    assert snapshot() == before and host.status() == status
    assert not (repo / "tmp/cache/local").exists()


@pytest.mark.parametrize("delay", [0.2, 0.8, 1.5, 3.0])
def test_kill_install_then_status_and_retry(host: Host, delay: float) -> None:
    before = host.status()
    old = host.deploy_dir()
    old_hash = tree_hash(old)
    proc = subprocess.Popen([sys.executable, "-m", "layering", "--sysroot", str(host.sysroot),
                             "install", "hello"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = host.status()
    assert st[-1]["checksum"] == before[0]["checksum"] or st == before
    assert tree_hash(old) == old_hash
    require_tool("ostree")
    listed = run(["ostree", "admin", "status", f"--sysroot={host.sysroot}"]).stdout
    assert before[0]["checksum"] in listed
    host.strata("install", "--idempotent", "hello")  # the killed one may have deployed
    assert host.status()[0]["requested-packages"] == ["hello"]




# ---- no silent downgrade (rpm-ostree's --allow-downgrade) ----------------------------------

CANARY = "canary: nothing may write here\n"


@dataclass
class Bare:
    """A sysroot without packages or apt: enough to deploy, upgrade and deploy again."""

    sysroot: Path
    tmp: Path
    canary: Path

    def strata(self, *args: object, check: bool = True):  # type: ignore[no-untyped-def]
        return run_strata("--sysroot", self.sysroot, *args, check=check)  # type: ignore[arg-type]

    def status(self) -> list[dict]:  # type: ignore[type-arg]
        return json.loads(self.strata("status", "--json").stdout)["deployments"]

    def ref(self, name: str) -> str | None:
        return Repo.open(self.sysroot / "ostree/repo").read_ref(name)

    def base(self, repo: Repo, branch: str, version: int) -> str:
        root = ostree_layout(deb_base_rootfs(self.tmp / f"base-{branch}-{version}-"
                                             f"{time.monotonic_ns()}", version=str(version)))
        return commit_directory(repo, root, branch=branch, timestamp=1700000000 + 100 * version,
                                metadata=[("version", str(version))]).checksum

    def refused(self, *args: object) -> str:
        p = self.strata(*args, check=False)
        line = p.stderr.strip()
        assert p.returncode == 1 and "\n" not in line and line.startswith("error: "), p.stderr
        return line

    def assert_intact(self, status: list[dict]) -> None:  # type: ignore[type-arg]
        assert self.status() == status
        assert self.canary.read_text() == CANARY
        run(["ostree", "fsck", f"--repo={self.sysroot / 'ostree/repo'}"])


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Bare]:
    require_tool("ostree")
    b = Bare(tmp_path / "sysroot", tmp_path, tmp_path / "canary")
    b.canary.write_text(CANARY)
    b.strata("os-init", "test")
    yield b
    subprocess.run(["chattr", "-R", "-i", str(b.sysroot)], capture_output=True)


def test_replayed_old_signed_summary_is_no_update_and_upgrade_refuses_the_downgrade(
        bare: Bare) -> None:
    from store.replication.summary import update_summary
    from store.sign import generate_keypair, sign_commit

    sec, pub = bare.tmp / "k.sec", bare.tmp / "k.pub"
    generate_keypair(sec, pub)
    srv = Repo.init(bare.tmp / "srv", RepoMode.ARCHIVE)

    def publish(version: int) -> str:
        csum = bare.base(srv, "os/stable", version)
        sign_commit(srv.path, "os/stable", sec)
        update_summary(srv, sign_key=sec)
        return csum

    c1 = publish(1)
    old = {n: (srv.path / n).read_bytes() for n in ("summary", "summary.sig")}
    with http_server(srv.path) as served:
        bare.strata("remote", "add", "--sign-pubkey", pub, "origin", served.url)
        bare.strata("pull", "origin", "os/stable")
        bare.strata("deploy", "origin:os/stable")
        c2 = publish(2)
        assert bare.strata("upgrade", "--check").stdout.startswith("Update available: ")
        bare.strata("upgrade")
        assert bare.status()[0]["checksum"] == c2
        for name, data in old.items():  # the attacker replays the old, validly signed summary
            (srv.path / name).write_bytes(data)
        before = bare.status()
        p = bare.strata("upgrade", "--check", check=False)
        assert p.returncode == 77 and p.stdout == "", p.stderr
        assert p.stderr.startswith(f"error: no update for origin:os/stable: commit of ref "
                                   f"os/stable {c1} (2023-11-14 22:15:00 UTC) is older than ")
        line = bare.refused("upgrade")
        assert c1 in line and line.endswith("; use --allow-downgrade to permit")
        bare.assert_intact(before)
        assert bare.ref("origin:os/stable") == c2
        bare.strata("upgrade", "--allow-downgrade")
    st = bare.status()
    assert st[0]["checksum"] == c1 and st[1]["checksum"] == c2
    assert bare.ref("origin:os/stable") == c1
    run(["ostree", "fsck", f"--repo={bare.sysroot / 'ostree/repo'}"])


def test_deploy_and_upgrade_refuse_an_older_base_unless_allow_downgrade(bare: Bare) -> None:
    repo = Repo.open(bare.sysroot / "ostree/repo")
    new = bare.base(repo, "os/stable", 2)
    old = bare.base(repo, "os/old", 1)
    bare.strata("deploy", "os/stable")
    before = bare.status()
    line = bare.refused("deploy", "os/old")
    assert line == (f"error: commit of os/old {old} (2023-11-14 22:15:00 UTC) is older than the "
                    f"base of the default deployment {new} (2023-11-14 22:16:40 UTC); use "
                    f"--allow-downgrade to permit")
    bare.assert_intact(before)
    older = bare.base(repo, "os/stable", 0)  # the followed ref itself goes back in time
    assert bare.strata("upgrade", "--check", check=False).returncode == 77
    assert older in bare.refused("upgrade")
    bare.assert_intact(before)
    bare.strata("deploy", "--allow-downgrade", "os/old")
    assert bare.status()[0]["checksum"] == old


def test_install_on_a_derived_image_composed_elsewhere_layers_on_that_image(host: Host) -> None:
    """An image composed by `strata compose` (a derived image, as a vendor publishes it) and
    deployed as a whole is the base of the host's own layer: `install` builds on it, not on
    the commit it was composed from (which the host never pulled)."""
    derived = host.strata("--repo", host.repo.path, "compose", "-b", "os/derived", "--base",
                          "os/stable", "--install", "less", "--source", host.source_line
                          ).stdout.split()[-1]
    host.strata("deploy", "os/derived")
    sources = host.deploy_dir() / "etc/apt/sources.list.d"
    sources.mkdir(parents=True, exist_ok=True)
    (sources / "local.list").write_text(host.source_line + "\n")
    st = host.status()
    assert st[0]["checksum"] == derived and st[0]["base-checksum"] == derived
    assert st[0]["layered-packages"] == []
    host.repo.path.joinpath("refs/heads/os/stable").unlink()  # as on a host that pulled only the image
    host.strata("install", "hello-doc")
    st = host.status()
    assert st[0]["base-checksum"] == derived and st[0]["requested-packages"] == ["hello-doc"]
    assert st[0]["layered-packages"] == ["hello-doc-2.10-3.all"]
    assert (host.deploy_dir() / "usr/bin/less").exists()


def test_install_no_recommends_leaves_out_recommends_as_apt(host: Host) -> None:
    with_recs = host.strata("install", "--dry-run", "hello").stdout
    assert "  install hello-doc " in with_recs
    without = host.strata("install", "--dry-run", "--no-recommends", "hello").stdout
    assert "  install hello " in without and "hello-doc" not in without
    out = host.strata("install", "--no-recommends", "hello").stdout
    assert out.startswith("3 packages layered")
    assert sorted(host.status()[0]["layered-packages"]) == [
        "hello-2.10-3.amd64", "less-590-2.amd64", "libgreet-1.0-1.amd64"]
    assert "hello-doc" not in host.strata("upgrade", "--dry-run", "--no-recommends").stdout


def _deb_with_postinst(tmp: Path, name: str, postinst: str) -> Path:
    root = tmp / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: changes /var state\n")
    (root / "DEBIAN/postinst").write_text(postinst)
    (root / "DEBIAN/postinst").chmod(0o755)
    run(["dpkg-deb", "--root-owner-group", "--build", root, tmp / f"{name}_1.0_all.deb"])
    return tmp / f"{name}_1.0_all.deb"


def test_install_brings_changed_var_files_into_the_stateroot(host: Host) -> None:
    """A postinst that changes /var files the base has (as debconf's config.dat): the host's
    untouched copy takes the new content, the one the host changed is kept with a warning."""
    base_var = {"var/lib/appdb/list": "base\n", "var/lib/appdb/other": "base\n"}
    host.commit_base("2", base_var)
    host.strata("deploy", "os/stable")
    var = host.sysroot / "ostree/deploy/test/var"
    (var / "lib/appdb").mkdir(parents=True)
    (var / "lib/appdb/list").write_text("base\n")  # as the base image has it
    (var / "lib/appdb/other").write_text("base\nthe admin's line\n")
    deb = _deb_with_postinst(host.tmp, "appdb-user", "#!/bin/sh\nset -e\n"
                             "echo mine >> /var/lib/appdb/list\n"
                             "echo mine >> /var/lib/appdb/other\n")
    proc = host.strata("install", str(deb))
    assert (var / "lib/appdb/list").read_text() == "base\nmine\n"
    assert (var / "lib/appdb/other").read_text() == "base\nthe admin's line\n"
    assert proc.stderr.splitlines() == [
        "warning: /var/lib/appdb/other changed on this host and in the new image; the host's "
        "copy is kept"]
