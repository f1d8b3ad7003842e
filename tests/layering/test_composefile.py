"""``strata compose --file IMAGE.toml``: parsing, same commit as the flags, reproducible on
two machines, no host identity shipped, kargs of its deployments, and the derived-image
walkthrough of docs/derived-images.md (compose, summary, delta, nginx, rebase)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from boot.errors import DeploymentError
from boot.kargs import Kargs, KargsError
from boot.target import image_kargs
from fixtures.images import apt_repo, build_deb, deb_base_rootfs, ostree_layout
from layering.composefile import ComposeFileError, load
from store.checkout import checkout
from store.commit import commit_directory, write_commit
from store.fsck import fsck
from store.gvariant import Variant
from store.repo import Repo, RepoMode
from tests.layering.conftest import fixture_debs
from tests.store.servers import http_server, nginx_server
from tests.util import require_tool, run, run_strata

BASE_TIME = 1_700_000_000
KEYGEN_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  mkdir -p /etc/ssh /var/lib/systemd /var/lib/dbus /var/log/keygen /var/cache/apt
  stamp="$$ $(date +%s) $(cat /proc/sys/kernel/random/uuid 2>/dev/null || true)"
  echo "private $stamp" > /etc/ssh/ssh_host_ed25519_key
  echo "public $stamp" > /etc/ssh/ssh_host_ed25519_key.pub
  echo "$stamp" > /etc/machine-id
  echo "$stamp" > /var/lib/dbus/machine-id
  echo "seed $stamp" > /var/lib/systemd/random-seed
  echo "installed at $stamp" > /var/log/keygen/install.log
  echo "cache $stamp" > /var/cache/apt/pkgcache.bin
  mkdir -p /var/cache/ldconfig
  echo "inodes $stamp" > /var/cache/ldconfig/aux-cache
fi
"""
LEFT_OUT = ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/machine-id", "/var/lib/dbus/machine-id", "/var/lib/systemd/random-seed",
            "/var/log/keygen/install.log", "/var/cache/apt/pkgcache.bin",
            "/var/cache/ldconfig/aux-cache"]


@dataclass
class World:
    tmp: Path
    rootfs: Path
    source: str
    local_deb: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("dpkg-deb", "apt-ftparchive", "bwrap")
    tmp = tmp_path_factory.mktemp("composefile")
    debs = fixture_debs(tmp / "debs")
    debs.append(build_deb(tmp / "debs", "keygen", "1.0",
                          files={"usr/share/keygen/README": b"makes host state\n"},
                          scripts={"postinst": KEYGEN_POSTINST}))
    local = build_deb(tmp / "image/debs", "acme-tools", "1.2",
                      files={"usr/bin/acme": b"#!/bin/sh\necho acme\n"})
    apt_repo(tmp / "apt", debs)
    rootfs = ostree_layout(deb_base_rootfs(tmp / "rootfs"))
    with http_server(tmp / "apt") as served:
        yield World(tmp, rootfs, f"deb [trusted=yes] {served.url} stable main", local)


def machine(world: World, path: Path, mode: RepoMode = RepoMode.BARE) -> tuple[Repo, str]:
    """A fresh repository holding the same base commit (as another machine pulls it)."""
    repo = Repo.init(path, mode)
    base = commit_directory(repo, world.rootfs, branch="base/stable", subject="base",
                            timestamp=BASE_TIME, metadata=[("version", "1")]).checksum
    return repo, base


def image_file(world: World, directory: Path, **extra: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ['base = "base/stable"', 'branch = "acme/web"', 'packages = ["hello", "keygen"]',
             f'local-packages = ["{world.local_deb}"]', f'sources = ["{world.source}"]',
             *(f"{k} = {v}" for k, v in extra.items())]
    path = directory / "image.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_file(repo: Path, path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run_strata("--repo", repo, "compose", "--file", path, *args, env=env).stdout.strip()


# ---- parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ('base = "b"\nbranch = "x"\npakages = ["a"]\n', "unknown key 'pakages' in {f}"),
    ('base = "b"\nbranch = "x"\npackages = "hello"\n',
     "key 'packages' must be a list of non-empty strings, not 'hello' in {f}"),
    ('base = "b"\nbranch = "x"\nno-scripts = "yes"\n', "key 'no-scripts' must be true or false"),
    ('branch = "x"\n', "missing key 'base' in {f}"),
    ('base = "b"\nbranch = "x"\nkargs = ["a b"]\n', "key 'kargs': kernel argument 'a b' is"),
    ('base = "b\n', "not a valid TOML file"),
])
def test_bad_files_are_refused_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "image.toml"
    f.write_text(text)
    with pytest.raises(ComposeFileError, match=message.format(f=f).replace("[", r"\[")
                       .replace("(", r"\(")):
        load(f)
    proc = run_strata("--repo", tmp_path / "none", "compose", "--file", f, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert str(f) in proc.stderr and "Traceback" not in proc.stderr


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "image.toml").write_text('base = "r:b"\nbranch = "x"\nlocal-packages = ["debs/a.deb"]\n'
                                  'replace = ["../b.deb"]\nkargs = ["quiet"]\nversion = "7"\n')
    cf = load(d / "image.toml")
    assert cf.local_packages == (d / "debs/a.deb",) and cf.replace == (d / "../b.deb",)
    req = cf.request()
    assert (req.base, req.branch, req.kargs, req.version) == ("r:b", "x", ("quiet",), "7")


def test_file_and_request_flags_together_are_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "image.toml"
    f.write_text('base = "b"\nbranch = "x"\n')
    proc = run_strata("--repo", tmp_path, "compose", "--file", f, "--install", "x", check=False)
    assert proc.returncode == 2 and "--file describes the whole image" in proc.stderr


# ---- the same commit -----------------------------------------------------------------------

def test_file_gives_the_same_commit_as_the_flags(world: World, tmp_path: Path) -> None:
    repo, _ = machine(world, tmp_path / "a")
    flags = run_strata("--repo", repo.path, "compose", "-b", "acme/web", "--base", "base/stable",
                       "--install", "hello", "--install", "keygen",
                       "--install-local", world.local_deb, "--source", world.source).stdout.strip()
    repo2, _ = machine(world, tmp_path / "b")
    assert compose_file(repo2.path, image_file(world, tmp_path / "conf")) == flags


def test_two_machines_make_the_same_commit_and_a_rerun_makes_none(world: World,
                                                                   tmp_path: Path) -> None:
    conf = image_file(world, tmp_path / "conf", version='"2026.12"', subject='"ACME web"')
    sums, times = [], []
    for name in ("m1", "m2"):
        repo, _ = machine(world, tmp_path / name)
        t0 = time.monotonic()
        proc = run_strata("--repo", repo.path, "compose", "--file", conf)
        times.append(time.monotonic() - t0)
        assert "5 downloaded" in proc.stderr and "6 unpacked" in proc.stderr, proc.stderr
        sums.append(proc.stdout.strip())
        assert fsck(repo).ok
    assert sums[0] == sums[1]
    commit = repo.load_commit(sums[1])
    assert commit.timestamp == BASE_TIME and commit.subject == "ACME web"
    assert commit.meta_value("version") == "2026.12"
    t0 = time.monotonic()
    again = run_strata("--repo", repo.path, "compose", "--file", conf)
    times.append(time.monotonic() - t0)
    assert again.stdout.strip() == sums[1] and repo.read_ref("acme/web") == sums[1]
    assert again.stderr.startswith(f"No change: acme/web is at {sums[1]}\n"), again.stderr
    assert "left out SSH host keys" in again.stderr  # the unchanged commit reports it too
    assert [c for c in run_strata("--repo", repo.path, "log", "acme/web").stdout.split()
            if len(c) == 64][:1] == [sums[1]]
    print(f"first compose {times[0]:.2f} s and {times[1]:.2f} s; unchanged rerun {times[2]:.2f} s")


def test_source_date_epoch_sets_the_time_on_both_machines(world: World, tmp_path: Path) -> None:
    conf = image_file(world, tmp_path / "conf")
    env = {"SOURCE_DATE_EPOCH": "1767225600"}
    sums = {compose_file(machine(world, tmp_path / n)[0].path, conf, env=env) for n in "ab"}
    assert len(sums) == 1
    repo = Repo.open(tmp_path / "a")
    assert repo.load_commit(sums.pop()).timestamp == 1767225600
    bad = run_strata("--repo", repo.path, "compose", "--file", conf,
                     env={"SOURCE_DATE_EPOCH": "soon"}, check=False)
    assert bad.returncode == 1 and "SOURCE_DATE_EPOCH='soon'" in bad.stderr


# ---- host identity -------------------------------------------------------------------------

def test_host_keys_machine_id_seeds_logs_and_caches_are_left_out(world: World,
                                                                  tmp_path: Path) -> None:
    repo, _ = machine(world, tmp_path / "repo")
    proc = run_strata("--repo", repo.path, "compose", "--file",
                      image_file(world, tmp_path / "conf"))
    csum = proc.stdout.strip()
    co = tmp_path / "co"
    checkout(repo, csum, co)
    assert (co / "usr/share/keygen/README").exists()  # the package is there, its state is not
    for path in LEFT_OUT:
        tree_path = co / ("usr" + path if path.startswith("/etc/") else path[1:])
        if path == "/etc/machine-id":
            assert tree_path.read_bytes() == b""
        else:
            assert not tree_path.exists(), path
    assert (co / "var/log/keygen").is_dir()
    unit = co / "usr/lib/systemd/system/strata-ssh-keygen.service"
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit.read_text()
    assert "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key" in unit.read_text()
    for wants in ("multi-user.target.wants", "ssh.service.wants"):
        link = co / "usr/lib/systemd/system" / wants / "strata-ssh-keygen.service"
        assert link.resolve() == unit.resolve()
    report = [line for line in proc.stderr.splitlines() if line.startswith("left out ")]
    assert [line.split(" (")[0] for line in report] == [
        "left out SSH host keys", "left out machine ID", "left out random seeds",
        "left out logs", "left out caches and backup files"]
    assert "ssh-keygen -A" in report[0] and "/etc/ssh/ssh_host_ed25519_key.pub" in report[0]
    assert "systemd writes the host's own" in report[1]


# ---- kernel arguments ----------------------------------------------------------------------

def _options(sysroot: Path) -> list[str]:
    entries = sorted((sysroot / "boot/loader/entries").glob("*.conf"))
    text = entries[-1].read_text()  # the highest version is the default entry
    return next(line.split()[1:] for line in text.splitlines() if line.startswith("options "))


def test_kargs_of_the_file_are_in_the_boot_entry(world: World, tmp_path: Path) -> None:
    sysroot = tmp_path / "sysroot"
    run_strata("--sysroot", sysroot, "os-init", "test")
    repo, _ = machine(world, sysroot / "ostree/repo")
    run_strata("--sysroot", sysroot, "deploy", "--karg", "root=/dev/vda", "base/stable")
    conf = image_file(world, tmp_path / "c1", kargs='["console=ttyS0", "quiet"]')
    compose_file(repo.path, conf)
    run_strata("--sysroot", sysroot, "deploy", "acme/web")
    opts = _options(sysroot)
    assert {"root=/dev/vda", "console=ttyS0", "quiet"} <= set(opts), opts
    conf2 = image_file(world, tmp_path / "c2", kargs='["console=ttyS1"]')
    compose_file(repo.path, conf2, )
    run_strata("--sysroot", sysroot, "deploy", "acme/web")
    opts = _options(sysroot)
    assert "console=ttyS1" in opts and "console=ttyS0" not in opts and "quiet" not in opts
    assert "root=/dev/vda" in opts


# ---- the walkthrough of docs/derived-images.md ---------------------------------------------

def test_derived_image_walkthrough(world: World, tmp_path: Path) -> None:
    build, base = machine(world, tmp_path / "build", RepoMode.ARCHIVE)
    conf = image_file(world, tmp_path / "image", version='"2026.12.1"',
                      kargs='["console=ttyS0"]')
    csum = compose_file(build.path, conf)
    rerun = run_strata("--repo", build.path, "compose", "--file", conf)
    assert rerun.stderr.startswith(f"No change: acme/web is at {csum}\n")
    out = run_strata("--repo", build.path, "run", "acme/web", "--", "/usr/bin/acme")
    assert out.stdout == "acme\n"
    run_strata("--repo", build.path, "static-delta", "generate", "--to", csum)
    run_strata("--repo", build.path, "summary", "-u")
    run(["ostree", "fsck", f"--repo={build.path}"])
    sysroot = tmp_path / "host"
    host = ("--sysroot", sysroot)
    run_strata(*host, "os-init", "test")
    log = tmp_path / "nginx/access.log"
    with nginx_server(build.path, tmp_path / "nginx") as srv:
        run_strata(*host, "remote", "add", "--no-sign-verify", "origin", srv.url)
        run_strata(*host, "pull", "origin", "base/stable")
        run_strata(*host, "deploy", "--karg", "root=/dev/vda", "origin:base/stable")
        log.write_text("")
        out = run_strata(*host, "rebase", "origin:acme/web").stdout
        assert out.strip() == f"Deployed {csum} (test, serial 0)", out  # no layer: no "on base"
        fetched = [line.split('"')[1] for line in log.read_text().splitlines()]
        objects = [r for r in fetched if "/objects/" in r and ".commitmeta " not in r]
        assert any("/deltas/" in r for r in fetched) and objects == [], fetched  # the delta
        st = json.loads(run_strata(*host, "status", "--json").stdout)["deployments"]
        assert st[0]["checksum"] == csum and st[0]["origin"] == "origin:acme/web"
        assert st[0]["version"] == "2026.12.1" and st[1]["checksum"] == base
        opts = _options(sysroot)
        assert "console=ttyS0" in opts and "root=/dev/vda" in opts, opts
        deployed = next((sysroot / "ostree/deploy/test/deploy").glob(f"{csum}.*[0-9]"))
        for path in ("usr/bin/acme", "usr/bin/hello", "usr/share/keygen/README"):
            assert (deployed / path).exists(), path
        assert not (deployed / "etc/ssh/ssh_host_ed25519_key").exists()
        assert (deployed / "usr/lib/systemd/system/strata-ssh-keygen.service").exists()
        # the next version of the image reaches the host as a static delta
        conf.write_text(conf.read_text().replace("2026.12.1", "2026.12.2"))
        v2 = compose_file(build.path, conf)
        run_strata("--repo", build.path, "static-delta", "generate", "--from", csum, "--to", v2)
        run_strata("--repo", build.path, "summary", "-u")
        log.write_text("")
        run_strata(*host, "upgrade")
        assert "/deltas/" in log.read_text()
    st = json.loads(run_strata(*host, "status", "--json").stdout)["deployments"]
    assert [d["checksum"] for d in st[:2]] == [v2, csum] and st[0]["version"] == "2026.12.2"
    assert "console=ttyS0" in _options(sysroot)
    deployed = next((sysroot / "ostree/deploy/test/deploy").glob(f"{v2}.*[0-9]"))
    assert (deployed / "usr/bin/acme").exists()
    run(["ostree", "fsck", f"--repo={sysroot / 'ostree/repo'}"])


def _with_kargs(repo: Repo, base: str, value: Variant) -> str:
    """A commit of ``base``'s tree whose ``strata.kargs`` is ``value`` (as an image could)."""
    c = repo.load_commit(base)
    with repo.transaction() as txn:
        return write_commit(txn, root_tree=c.root_tree, root_meta=c.root_meta,
                            timestamp=c.timestamp, parent=base,
                            metadata={"strata.kargs": value})


def test_image_kargs_cannot_set_ostree_or_be_unbounded(world: World, tmp_path: Path) -> None:
    repo, base = machine(world, tmp_path / "repo")
    ok = _with_kargs(repo, base, Variant("as", ["ostree=/evil", "quiet"]))
    assert image_kargs(repo, Kargs(("ostree=/good",)), None, ok).args == ("ostree=/good", "quiet")
    huge = _with_kargs(repo, base, Variant("as", ["a=1"] * 1000))
    with pytest.raises(DeploymentError, match="strata.kargs is not a list of at most 256"):
        image_kargs(repo, Kargs(), None, huge)
    bad = _with_kargs(repo, base, Variant("as", ["a\nb"]))
    with pytest.raises(KargsError, match="control or line-breaking"):
        image_kargs(repo, Kargs(), None, bad)
