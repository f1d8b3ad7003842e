"""Fixtures for importer tests: a fresh repository, real Debian packages, tree listings."""

from __future__ import annotations

import contextlib
import functools
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from store.mtree import MutableTree
from store.repo import Repo

REAL_DEBS = ("jq", "libjq1", "libonig5", "tree")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo.init(tmp_path / "repo")


@pytest.fixture(scope="session")
def real_debs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A handful of real Debian packages from the configured apt sources."""
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not available")
    d = tmp_path_factory.mktemp("real-debs")
    d.chmod(0o777)
    proc = subprocess.run(["apt-get", "download", *REAL_DEBS], cwd=d, capture_output=True,
                          text=True, timeout=300)
    debs = sorted(d.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != len(REAL_DEBS):
        pytest.skip(f"apt-get download failed: {proc.stderr.strip()[-300:]}")
    return debs


def tree_listing(repo: Repo, ref: str) -> dict[str, tuple[int, int, int, str]]:
    """path -> (st_mode, uid, gid, symlink target) for every entry of a commit ("" is the root)."""
    root = MutableTree.from_commit(repo, ref)
    out = {"": (root.meta.mode, root.meta.uid, root.meta.gid, "")}
    for path, node in root.walk():
        if isinstance(node, MutableTree):
            out[path] = (node.meta.mode, node.meta.uid, node.meta.gid, "")
        else:
            meta, stream = repo.open_file(node)
            if stream is not None:
                stream.close()
            out[path] = (meta.mode, meta.uid, meta.gid, meta.symlink)
    return out


def file_content(repo: Repo, ref: str, path: str) -> bytes:
    node = MutableTree.from_commit(repo, ref).lookup(path)
    assert isinstance(node, str), path
    return repo.load_file(node)[1]


def mode_string(mode: int) -> str:
    """ls-style mode string as dpkg-deb -c prints it (hardlinks show as 'h')."""
    return stat.filemode(mode)


class _Handler(SimpleHTTPRequestHandler):
    log: list[tuple[str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.log.append((self.path, int(code)))  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """Serve ``directory`` over loopback HTTP in a thread; yield (base URL, request log)."""
    handler = functools.partial(_Handler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.log = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield f"http://127.0.0.1:{port}", server.log  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
