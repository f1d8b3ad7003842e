"""Device nodes, FIFOs and sockets in a tree to commit: refused as ``ostree commit``
refuses them, or left out on request (``--skip-special-files``)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from store.commit import commit_directory
from store.errors import InputError
from store.repo import Repo, RepoMode
from tests.util import require_tool, run, run_strata


def _tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("tool\n")
    (root / "dev").mkdir()
    return root


def _chardev(path: Path) -> None:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def _listing(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.name != ".lock")


@pytest.mark.parametrize("kind", ["device node", "FIFO", "socket"])
def test_special_file_fails_the_commit_naming_it(tmp_path: Path, kind: str) -> None:
    if os.geteuid() != 0 and kind == "device node":
        pytest.skip("mknod needs root")
    tree = _tree(tmp_path / "tree")
    node = tree / "dev/null"
    sock = None
    if kind == "device node":
        _chardev(node)
    elif kind == "FIFO":
        os.mkfifo(node)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(node))
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE)
    before = _listing(tmp_path / "repo")
    try:
        with pytest.raises(InputError, match=f"^{kind} in {tree}/dev/null: "):
            commit_directory(repo, tree, branch="os/x")
    finally:
        if sock is not None:
            sock.close()
    assert _listing(tmp_path / "repo") == before


def test_cli_refuses_a_device_node_as_ostree_does(tmp_path: Path) -> None:
    """Both tools fail on the same tree and leave nothing behind; the message is one line
    naming the node."""
    require_tool("ostree")
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    tree = _tree(tmp_path / "tree")
    _chardev(tree / "dev/null")
    theirs = tmp_path / "theirs"
    run(["ostree", f"--repo={theirs}", "init", "--mode=bare"])
    proc = subprocess.run(["ostree", f"--repo={theirs}", "commit", "-b", "os/x", str(tree)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Not a regular file or symlink: null" in proc.stderr
    ours = tmp_path / "ours"
    run_strata("--repo", ours, "init")
    before = _listing(ours)
    proc = run_strata("--repo", ours, "commit", "-b", "os/x", tree, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: device node in {tree}/dev/null: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert _listing(ours) == before
    run(["ostree", f"--repo={ours}", "fsck", "-q"])


def test_skip_special_files_gives_ostrees_commit_of_the_emptied_tree(tmp_path: Path) -> None:
    """With ``--skip-special-files`` the node is left out and its directory kept: the commit is
    the one ``ostree commit`` makes of the tree with ``/dev`` emptied (the mmdebstrap route)."""
    require_tool("ostree")
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    tree = _tree(tmp_path / "tree")
    _chardev(tree / "dev/null")
    os.mkfifo(tree / "dev/fifo")
    ours = tmp_path / "ours"
    run_strata("--repo", ours, "init")
    proc = run_strata("--repo", ours, "commit", "-b", "os/x", "--timestamp", "1700000000",
                      "--skip-special-files", tree)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "/dev/fifo" in warnings[0] and "/dev/null" in warnings[1]
    for node in ("null", "fifo"):
        (tree / "dev" / node).unlink()
    theirs = tmp_path / "theirs"
    run(["ostree", f"--repo={theirs}", "init", "--mode=bare"])
    want = run(["ostree", f"--repo={theirs}", "commit", "-b", "os/x",
                "--timestamp=@1700000000", str(tree)]).stdout.strip()
    assert proc.stdout.strip() == want
    run(["ostree", f"--repo={ours}", "fsck", "-q"])
