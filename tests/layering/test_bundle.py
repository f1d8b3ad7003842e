"""Bundles: a commit and packages carried in one file to a host with no network.

The host side runs inside ``unshare -n`` (a network namespace with only a down
loopback): any attempt to reach the image remote or the apt source fails.
The real ``ostree`` applies the bundle's delta and checks the result.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import apt_repo, deb_base_rootfs, ostree_layout
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from store.sign import generate_keypair
from tests.layering.conftest import fixture_debs
from tests.store.servers import Served, http_server
from tests.util import ROOT, require_tool, run, run_strata


@dataclass
class World:
    tmp: Path
    server: Repo  # the image remote's repository, served
    mirror: Path  # a networked machine's repository that pulled from it (origin:os/stable)
    secret: Path
    public: Path
    source_line: str
    served: Served

    def commit(self, version: str) -> str:
        root = deb_base_rootfs(self.tmp / f"rootfs-{version}-{time.monotonic_ns()}",
                               version=version)
        (root / "etc/apt/sources.list.d/local.list").write_text(self.source_line + "\n")
        ostree_layout(root)
        csum = commit_directory(self.server, root, branch="os/stable",
                                metadata=[("version", version)]).checksum
        run_strata("--repo", self.server.path, "sign", "--key", self.secret, "os/stable")
        run_strata("--repo", self.server.path, "summary", "--update", "--sign-key", self.secret)
        run_strata("--repo", self.mirror, "pull", "origin", "os/stable")
        return csum


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    require_tool("dpkg-deb", "apt-ftparchive", "bwrap", "unshare", "ostree")
    apt_repo(tmp_path / "apt", fixture_debs(tmp_path / "debs"))
    server = Repo.init(tmp_path / "srv/repo", RepoMode.ARCHIVE)
    secret, public = tmp_path / "sign.key", tmp_path / "sign.pub"
    generate_keypair(secret, public)
    mirror = tmp_path / "mirror"
    run_strata("--repo", mirror, "init")
    with http_server(tmp_path / "apt") as apt, http_server(tmp_path / "srv/repo") as srv:
        run_strata("--repo", mirror, "remote", "add", "--sign-pubkey", public, "origin", srv.url)
        yield World(tmp_path, server, mirror, secret, public,
                    f"deb [trusted=yes] {apt.url} stable main", srv)


def offline(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    """strata in a network namespace with no usable interface."""
    env = {k: v for k, v in os.environ.items() if k not in ("STRATA_REPO", "STRATA_SYSROOT")}
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "layering",
                           *map(os.fspath, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"offline strata {args} exited {proc.returncode}\n{proc.stderr}")
    return proc


def new_host(w: World, name: str = "host") -> Path:
    sysroot = w.tmp / name
    run_strata("--sysroot", sysroot, "os-init", "test")
    run_strata("--sysroot", sysroot, "remote", "add", "--sign-pubkey", w.public, "origin",
               "http://127.0.0.1:9/unreachable")
    return sysroot


def state(repo: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """Refs, objects and the entries of tmp/ (besides caches) of a repository."""
    repo_ = Repo.open(repo, clean=False)
    objects = sorted(str(p.relative_to(repo)) for p in (repo / "objects").rglob("*") if p.is_file())
    tmp = sorted(p.name for p in (repo / "tmp").iterdir() if p.name != "cache")
    return repo_.list_refs(), objects, tmp


def deploy_dir(sysroot: Path) -> Path:
    from boot.sysroot import Sysroot

    s = Sysroot(sysroot)
    return s.deployment_dir(s.load().deployments[0])


def test_bundle_deploy_install_upgrade_offline(world: World) -> None:
    v1 = world.commit("1")
    b1 = world.tmp / "v1.bundle"
    run_strata("--repo", world.mirror, "bundle", "create", "-o", b1, "origin:os/stable",
               "--packages", "hello")
    with tarfile.open(b1) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("bundle.json").read())  # type: ignore[union-attr]
    assert names[:2] == ["bundle.json", "delta.superblock"]
    assert manifest["ref"] == "origin:os/stable" and manifest["commit"] == v1
    assert sum(e["package"] for e in manifest["entries"]) == 4  # hello, libgreet, less, doc

    host = new_host(world)
    out = offline("--sysroot", host, "bundle", "apply", b1).stdout
    assert out.startswith(f"origin:os/stable -> {v1}: ") and "4 packages" in out
    offline("--sysroot", host, "deploy", "origin:os/stable")
    offline("--sysroot", host, "install", "--offline", "hello")
    assert (deploy_dir(host) / "usr/bin/hello").exists()

    world.commit("2")
    b2 = world.tmp / "v2.bundle"
    run_strata("--repo", world.mirror, "bundle", "create", "-o", b2, "--from", v1,
               "origin:os/stable")
    assert b2.stat().st_size < b1.stat().st_size
    offline("--sysroot", host, "bundle", "apply", b2)
    offline("--sysroot", host, "upgrade", "--offline")
    status = json.loads(run_strata("--sysroot", host, "status", "--json").stdout)
    top = status["deployments"][0]
    assert top["version"] == "2" and top["requested-packages"] == ["hello"]
    assert (deploy_dir(host) / "usr/bin/hello").exists()
    run(["ostree", "fsck", f"--repo={host}/ostree/repo"])


def test_ostree_applies_the_delta_member(world: World) -> None:
    v1 = world.commit("1")
    b1 = world.tmp / "b"
    run_strata("--repo", world.mirror, "bundle", "create", "-o", b1, "origin:os/stable")
    with tarfile.open(b1) as tar:
        tar.extract("delta.superblock", world.tmp / "x", filter="data")
    oracle = world.tmp / "oracle"
    run(["ostree", "init", f"--repo={oracle}", "--mode=bare-user"])
    run(["ostree", "static-delta", "apply-offline", f"--repo={oracle}",
         world.tmp / "x/delta.superblock"])
    run(["ostree", "fsck", f"--repo={oracle}"])
    shown = run(["ostree", "show", f"--repo={oracle}", v1]).stdout
    assert "Version: 1" in shown
    meta = run(["ostree", "show", f"--repo={oracle}", v1,
                "--print-detached-metadata-key=ostree.sign.ed25519"]).stdout
    assert meta.strip()  # the signature travelled with the delta


def _rewrite(src: Path, dest: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Copy a bundle, passing each member's (name, bytes) through ``change``."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as tout:
        for info in tin.getmembers():
            data = change(info.name, tin.extractfile(info).read())  # type: ignore[union-attr]
            if data is None:
                continue
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def _flip_in_part(name: str, data: bytes) -> bytes:
    if name != "delta.superblock":
        return data
    b = bytearray(data)
    b[len(b) // 3] ^= 0x01  # inside the first inline part (metadata comes first)
    return bytes(b)


def _smuggle_object(sb_bytes: bytes) -> bytes:
    """The superblock with one more file object in its first part (not in the commit), its
    part checksum recomputed: everything matches except the tree."""
    import dataclasses
    import hashlib

    from store.gvariant import Variant
    from store.objects import FileMeta, ObjectType, file_header
    from store.replication.delta_format import (
        PartPayload,
        Superblock,
        delta_dir,
        delta_name,
        write_varuint,
    )

    sb = Superblock.from_bytes(sb_bytes)
    key = f"{delta_dir(delta_name(sb.from_csum, sb.to_csum))}/0"
    y, body = sb.metadata[key].value
    payload = PartPayload.from_bytes(bytes([y]) + body)
    content = b"smuggled\n"
    csum = hashlib.sha256(file_header(FileMeta(0, 0, 0o100644)) + content).hexdigest()
    modes = [*payload.modes, (0, 0, 0o100644)]
    ops = payload.ops + b"S" + write_varuint(len(modes) - 1) + write_varuint(0) + \
        write_varuint(len(content)) + write_varuint(len(payload.blob))
    raw = PartPayload(modes, payload.xattrs, payload.blob + content, ops).to_bytes()
    part = sb.parts[0]
    part = dataclasses.replace(part, checksum=hashlib.sha256(raw).hexdigest(), size=len(raw),
                               usize=part.usize + len(content),
                               objects=(*part.objects, (ObjectType.FILE, csum)))
    md = {**sb.metadata, key: Variant("(yay)", (raw[0], raw[1:]))}
    return dataclasses.replace(sb, parts=(part, *sb.parts[1:]), metadata=md).to_bytes()


def _with_superblock(good: Path, bad: Path, sb: bytes) -> None:
    import hashlib

    m = json.loads(_member(good, "bundle.json"))
    m["superblock-sha256"], m["superblock-size"] = hashlib.sha256(sb).hexdigest(), len(sb)
    _rewrite(good, bad, lambda n, d: json.dumps(m).encode() if n == "bundle.json"
             else sb if n == "delta.superblock" else d)


def _resign(world: World):  # type: ignore[no-untyped-def]
    other, other_pub = world.tmp / "other.key", world.tmp / "other.pub"
    generate_keypair(other, other_pub)
    return other


WHY = {"flipped-part": "does not match its sha256",
       "superblock-and-manifest": "part 0 in",
       "wrong-signature": "signature does not verify",
       "extra-member": "is not in its manifest",
       "truncated": "is truncated",
       "pax-header": "is not a plain regular file",
       "bad-ref": "invalid ref name",
       "unreferenced-object": "is not part of commit",
       "unsigned": "no ed25519 signature"}


@pytest.mark.parametrize("attack", ["flipped-part", "superblock-and-manifest", "wrong-signature",
                                    "extra-member", "truncated", "unreferenced-object",
                                    "unsigned", "pax-header", "bad-ref"])
def test_tampered_bundle_refused_leaves_nothing(world: World, attack: str) -> None:
    world.commit("1")
    good = world.tmp / "good.bundle"
    args = ["--packages", "hello"] if attack == "extra-member" else []
    run_strata("--repo", world.mirror, "bundle", "create", "-o", good, "origin:os/stable", *args)
    bad = world.tmp / "bad.bundle"
    if attack == "flipped-part":
        _rewrite(good, bad, _flip_in_part)
    elif attack == "superblock-and-manifest":  # the manifest's sha256 updated to match
        _with_superblock(good, bad, _flip_in_part("delta.superblock",
                                                  _member(good, "delta.superblock")))
    elif attack == "bad-ref":
        m = json.loads(_member(good, "bundle.json"))
        m["ref"] = "origin:../../../../canary"
        _rewrite(good, bad, lambda n, d: json.dumps(m).encode() if n == "bundle.json" else d)
    elif attack == "unreferenced-object":
        _with_superblock(good, bad, _smuggle_object(_member(good, "delta.superblock")))
    elif attack == "wrong-signature":  # same commit, signed by a key the host does not trust
        mirror2 = world.tmp / "mirror2"
        shutil.copytree(world.mirror, mirror2, symlinks=True)
        (next((mirror2 / "objects").rglob("*.commitmeta"))).unlink()
        run_strata("--repo", mirror2, "sign", "--key", _resign(world), "origin:os/stable")
        run_strata("--repo", mirror2, "bundle", "create", "-o", bad, "origin:os/stable")
    elif attack == "unsigned":  # the commit's signature left out
        mirror2 = world.tmp / "mirror2"
        shutil.copytree(world.mirror, mirror2, symlinks=True)
        (next((mirror2 / "objects").rglob("*.commitmeta"))).unlink()
        run_strata("--repo", mirror2, "bundle", "create", "-o", bad, "origin:os/stable")
    elif attack == "extra-member":
        with tarfile.open(good) as tin, tarfile.open(bad, "w") as tout:
            for info in tin.getmembers():
                tout.addfile(info, tin.extractfile(info))
            info = tarfile.TarInfo("cache/" + "0" * 64)
            info.size = 4
            tout.addfile(info, io.BytesIO(b"evil"))
    elif attack == "pax-header":  # extension headers are read into memory by tar readers
        with tarfile.open(good) as tin, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as tout:
            for info in tin.getmembers():
                info.pax_headers = {"comment": "x" * 4096}
                tout.addfile(info, tin.extractfile(info))
    else:
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    host = new_host(world)
    repo = host / "ostree/repo"
    before = state(repo)
    proc = offline("--sysroot", host, "bundle", "apply", bad, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], lines
    assert WHY[attack] in lines[0], lines
    assert state(repo) == before
    assert not list(world.tmp.rglob("canary"))
    run(["ostree", "fsck", f"--repo={repo}"])
    offline("--sysroot", host, "bundle", "apply", good)  # the good one still goes in


def _member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as tar:
        return tar.extractfile(name).read()  # type: ignore[union-attr]


def test_older_commit_refused_unless_allowed(world: World) -> None:
    world.commit("1")
    old = world.tmp / "old.bundle"
    run_strata("--repo", world.mirror, "bundle", "create", "-o", old, "origin:os/stable")
    time.sleep(1.1)  # commit timestamps have a resolution of one second
    world.commit("2")
    new = world.tmp / "new.bundle"
    run_strata("--repo", world.mirror, "bundle", "create", "-o", new, "origin:os/stable")
    host = new_host(world)
    offline("--sysroot", host, "bundle", "apply", new)
    proc = offline("--sysroot", host, "bundle", "apply", old, check=False)
    assert proc.returncode == 1 and "--allow-downgrade" in proc.stderr
    offline("--sysroot", host, "bundle", "apply", "--allow-downgrade", old)


def test_bundle_for_unknown_remote_refused(world: World) -> None:
    world.commit("1")
    b = world.tmp / "b"
    run_strata("--repo", world.mirror, "bundle", "create", "-o", b, "origin:os/stable")
    repo = world.tmp / "bare"
    run_strata("--repo", repo, "init")
    proc = offline("--repo", repo, "bundle", "apply", b, check=False)
    assert proc.returncode == 1 and "remote origin not found" in proc.stderr
    assert Repo.open(repo).list_refs() == {}


def test_local_package_file_travels_and_installs_offline(world: World) -> None:
    world.commit("1")
    deb = next((world.tmp / "debs").glob("clash-a_*.deb"))
    b = world.tmp / "local.bundle"
    run_strata("--repo", world.mirror, "bundle", "create", "-o", b, "origin:os/stable",
               "--packages", deb)
    host = new_host(world)
    offline("--sysroot", host, "bundle", "apply", b)
    import hashlib

    sha = hashlib.sha256(deb.read_bytes()).hexdigest()
    kept = host / f"ostree/repo/tmp/cache/local/{sha}.deb"
    assert kept.read_bytes() == deb.read_bytes()
    offline("--sysroot", host, "deploy", "origin:os/stable")
    offline("--sysroot", host, "install", "--offline", kept)
    assert (deploy_dir(host) / "usr/share/clash/file").read_text() == "from a\n"
