"""``strata export``: the tar of a commit against the real ``ostree checkout`` of the same
commit (paths, types, modes, owners, symlink targets, contents, xattrs, hardlinks), against
``ostree export`` (same entries and stamps; ostree's GNU tar leaves xattrs and hardlinks out),
read back by GNU tar and by ``podman import``; failures leave no file behind."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.util import StrataRunner, require_tool, run

BIN = b"\xff\x00\x01binary"  # an xattr value that is not UTF-8


def _tree(root: Path) -> Path:
    """Owners, setuid/sticky modes, xattrs (one binary), symlinks (relative, absolute,
    dangling), identical files (one object: hardlinks in a checkout), an empty file, a
    file larger than the copy chunk, long and non-ASCII names."""
    for d in ("usr/bin", "usr/lib/deep/er/still", "usr/etc", "var/tmp", "long"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.chmod(root / "var/tmp", 0o1777)
    (root / "usr/etc/shadow").write_text("root:*:1::::::\n")
    os.chown(root / "usr/etc/shadow", 0, 42)
    os.chmod(root / "usr/etc/shadow", 0o640)
    (root / "usr/lib/owned").write_text("owned\n")
    os.chown(root / "usr/lib/owned", 1234, 5678)
    os.chown(root / "usr/lib/deep", 99, 98)
    for name in ("same-a", "same-b", "deep/er/still/same-c"):
        (root / "usr/lib" / name).write_text("identical content\n")
    (root / "usr/lib/empty").write_bytes(b"")
    (root / "usr/lib/big").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    os.setxattr(root / "usr/bin/tool", "user.flag", BIN)
    os.setxattr(root / "usr/lib/deep", "user.dir", b"on a directory")
    os.symlink("../lib/same-a", root / "usr/bin/rel")
    os.symlink("/usr/bin/tool", root / "usr/bin/abs")
    os.symlink("nowhere/at/all", root / "usr/bin/dangling")
    os.symlink("usr/bin", root / "bin")
    (root / "long" / ("n" * 150)).write_text("long name\n")
    (root / "usr/lib/ünïcødé").write_text("utf-8 name\n")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    require_tool("ostree", "tar")
    if os.geteuid() != 0:
        pytest.skip("owners other than the caller's need root")
    tmp = tmp_path_factory.mktemp("export")
    repo = tmp / "repo"
    run(["ostree", "init", f"--repo={repo}", "--mode=bare"])
    run(["ostree", "commit", f"--repo={repo}", "-b", "img", "--timestamp=@1700000123",
         str(_tree(tmp / "src"))])
    checkout = tmp / "checkout"
    run(["ostree", "checkout", f"--repo={repo}", "img", str(checkout)])
    return repo, checkout, run(["ostree", "rev-parse", f"--repo={repo}", "img"]).stdout.strip()


Entry = tuple[object, ...]


def _from_dir(root: Path) -> tuple[dict[str, Entry], list[set[str]]]:
    """Each path's (type, mode, uid, gid, target or digest, xattrs) and the groups of
    regular files sharing an inode."""
    out: dict[str, Entry] = {}
    inodes: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, *([""] if dirpath == str(root) else [])]:
            p = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            xattrs = {n: os.getxattr(p, n, follow_symlinks=False)
                      for n in os.listxattr(p, follow_symlinks=False)}
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                inodes.setdefault(st.st_ino, set()).add(rel)
            else:
                what = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, what, xattrs)
    return out, sorted((g for g in inodes.values() if len(g) > 1), key=sorted)


def _from_tar(path: Path) -> tuple[dict[str, Entry], list[set[str]], dict[str, float]]:
    """The same from a tar (hardlink groups from its LNKTYPE entries) and the mtimes."""
    out: dict[str, Entry] = {}
    links: dict[str, set[str]] = {}
    mtimes = {}
    with tarfile.open(path) as tar:
        for m in tar:
            rel = os.path.normpath(m.name)
            xattrs = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                      for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            mtimes[rel] = m.mtime
            if m.islnk():
                target = os.path.normpath(m.linkname)
                links.setdefault(target, {target}).add(rel)
                out[rel] = out[target]
                continue
            kind = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK}.get(
                m.type, stat.S_IFREG)
            what: object = (m.linkname if m.issym() else None if m.isdir() else
                            hashlib.sha256(tar.extractfile(m).read()).hexdigest())  # type: ignore[union-attr]
            out[rel] = (kind, m.mode, m.uid, m.gid, what, xattrs)
    return out, sorted(links.values(), key=sorted), mtimes


def test_export_matches_the_ostree_checkout(world: tuple[Path, Path, str], tmp_path: Path,
                                            strata: StrataRunner) -> None:
    repo, checkout, csum = world
    strata("--repo", repo, "export", "img", "-o", tmp_path / "img.tar")
    entries, links, mtimes = _from_tar(tmp_path / "img.tar")
    want, want_links = _from_dir(checkout)
    assert entries == want
    assert links == want_links and {"usr/lib/same-a", "usr/lib/same-b"} <= links[0]
    assert entries["usr/bin/tool"][5] == {"user.flag": BIN}
    assert set(mtimes.values()) == {1700000123}  # the commit's timestamp, as ostree export
    assert list(os.listdir(tmp_path)) == ["img.tar"]  # no temporary file beside it


def test_export_has_ostree_exports_entries_plus_xattrs_and_hardlinks(
        world: tuple[Path, Path, str], tmp_path: Path, strata: StrataRunner) -> None:
    repo, _checkout, _csum = world
    if "export" not in run(["ostree", "--help"]).stdout:
        pytest.skip("this ostree has no export command")
    run(["ostree", "export", f"--repo={repo}", "img", "-o", str(tmp_path / "ostree.tar")])
    strata("--repo", repo, "export", "img", "-o", tmp_path / "strata.tar")
    theirs, their_links, their_mtimes = _from_tar(tmp_path / "ostree.tar")
    ours, _links, our_mtimes = _from_tar(tmp_path / "strata.tar")
    assert their_links == []  # ostree writes each file whole and no xattrs ...
    assert {p: e[:5] for p, e in ours.items()} == {p: e[:5] for p, e in theirs.items()}
    assert our_mtimes == their_mtimes
    with tarfile.open(tmp_path / "ostree.tar") as a, tarfile.open(tmp_path / "strata.tar") as b:
        assert [m.name for m in a] == [m.name for m in b]  # same names, same order
        assert {(m.uname, m.gname) for m in b} == {("", "")}


def test_gnu_tar_extracts_the_same_tree(world: tuple[Path, Path, str], tmp_path: Path,
                                        strata: StrataRunner) -> None:
    repo, checkout, _csum = world
    data = subprocess.run([sys.executable, "-m", "layering", "--repo", str(repo), "export",
                           "img", "-o", "-"], capture_output=True, check=True)
    strata("--repo", repo, "export", "img", "-o", tmp_path / "file.tar")
    assert data.stdout == (tmp_path / "file.tar").read_bytes()  # '-' writes the same bytes
    listing = run(["tar", "-tf", str(tmp_path / "file.tar")]).stdout.split("\n")
    assert "usr/lib/ünïcødé" in listing and f"long/{'n' * 150}" in listing
    out = tmp_path / "x"
    out.mkdir()
    run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf",
         str(tmp_path / "file.tar"), "-C", str(out)])
    assert _from_dir(out) == _from_dir(checkout)


def test_podman_imports_the_tar(world: tuple[Path, Path, str], tmp_path: Path,
                                strata: StrataRunner) -> None:
    require_tool("podman")
    repo, checkout, _csum = world
    strata("--repo", repo, "export", "img", "-o", tmp_path / "img.tar")
    runroot = tempfile.mkdtemp(prefix="strata-podman-")  # podman wants it short
    podman = ["podman", "--root", str(tmp_path / "root"), "--runroot", runroot,
              "--storage-driver", "vfs"]
    run([*podman, "import", str(tmp_path / "img.tar"), "strata-export-test:1"])
    try:
        mounted = Path(run([*podman, "image", "mount", "strata-export-test:1"]).stdout.strip())
        got, got_links = _from_dir(mounted)
        want, want_links = _from_dir(checkout)
        assert got == want and got_links == want_links
    finally:
        subprocess.run([*podman, "image", "unmount", "--all"], capture_output=True)
        subprocess.run([*podman, "rmi", "-f", "strata-export-test:1"], capture_output=True)
        subprocess.run(["rm", "-rf", str(tmp_path / "root"), runroot])


def test_unknown_ref_and_corrupt_object_leave_no_file(world: tuple[Path, Path, str],
                                                      tmp_path: Path,
                                                      strata: StrataRunner) -> None:
    repo, _checkout, _csum = world
    bad = strata("--repo", repo, "export", "nosuch", "-o", tmp_path / "x.tar", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and \
        len(bad.stderr.splitlines()) == 1 and "nosuch" in bad.stderr
    copy = tmp_path / "repo"
    run(["cp", "-a", str(repo), str(copy)])
    obj = _object_of(copy, "usr/lib/big")
    with open(obj, "r+b") as f:
        f.truncate(1000)  # shorter than the size the tar header was written with
    bad = strata("--repo", copy, "export", "img", "-o", tmp_path / "y.tar", check=False)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("error: ") and obj.parent.name + obj.stem in bad.stderr
    assert sorted(os.listdir(tmp_path)) == ["repo"]


def _object_of(repo: Path, path: str) -> Path:
    """The file object of ``path`` in the commit ``img`` (``ostree ls`` names it)."""
    line = run(["ostree", "ls", f"--repo={repo}", "-C", "img", f"/{path}"]).stdout.split()
    csum = line[4]
    return repo / "objects" / csum[:2] / f"{csum[2:]}.file"


def test_an_xattr_name_a_tar_cannot_carry_is_refused(tmp_path: Path,
                                                      strata: StrataRunner) -> None:
    require_tool("ostree")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/f").write_text("x\n")
    os.setxattr(tmp_path / "src/f", "user.a=b", b"value")  # '=' would end the PAX keyword
    run(["ostree", "init", f"--repo={tmp_path / 'repo'}", "--mode=bare"])
    run(["ostree", "commit", f"--repo={tmp_path / 'repo'}", "-b", "x", str(tmp_path / "src")])
    bad = strata("--repo", tmp_path / "repo", "export", "x", "-o", tmp_path / "x.tar",
                 check=False)
    assert (bad.returncode, bad.stderr) == (
        1, "error: xattr name b'user.a=b' of f cannot be written in a tar\n")
    assert sorted(os.listdir(tmp_path)) == ["repo", "src"]
