"""Real HTTP servers for replication tests, each on a free loopback port.

* :func:`http_server` — ``python3 -m http.server --bind 127.0.0.1`` in a subprocess.
* :func:`nginx_server` — nginx with a config and access log in a temp dir.
* :func:`hostile_server` — an in-process threaded server that serves a
  directory but misbehaves on chosen paths (404, wrong bytes, truncation,
  redirect loop, dying after N requests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"server on port {port} did not start")


@dataclass
class Served:
    url: str
    port: int
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    requests: list[str] = field(default_factory=list)

    def fetched(self) -> list[str]:
        """Request paths, from the access log (nginx) or the in-process record."""
        if self.log is None:
            return list(self.requests)
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split('"')
            if len(parts) > 1 and " " in parts[1]:
                out.append(parts[1].split(" ")[1])
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[Served]:
    """``python3 -m http.server`` serving ``directory``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
         str(directory), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = Served(f"http://127.0.0.1:{port}", port, proc=proc)
    try:
        wait_port(port)
        yield served
    finally:
        served.stop()


NGINX_CONF = """\
{user}
daemon off;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log {tmp}/access.log;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port}{ssl};
    root {root};
    {extra}
  }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


@contextlib.contextmanager
def nginx_server(directory: Path, tmp: Path, extra: str = "",
                 tls: tuple[Path, Path] | None = None) -> Iterator[Served]:
    """nginx serving ``directory``; its access log is ``tmp/access.log``; ``tls`` = (cert, key)."""
    binary = nginx_binary()
    if binary is None:
        import pytest

        pytest.skip("nginx not installed")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    ssl = ""
    if tls is not None:
        ssl = " ssl"
        extra += f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};"
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp, port=port, root=directory, extra=extra,
                                      ssl=ssl))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    scheme = "https" if tls else "http"
    served = Served(f"{scheme}://127.0.0.1:{port}", port, log=tmp / "access.log", proc=proc)
    try:
        wait_port(port)
        yield served
    finally:
        served.stop()


Hook = Callable[[BaseHTTPRequestHandler, str, Path], bool]


@contextlib.contextmanager
def hostile_server(directory: Path, hook: Hook | None = None,
                   die_after: int | None = None) -> Iterator[Served]:
    """Serve ``directory``; ``hook(handler, path, file)`` may answer a request itself (return True).

    With ``die_after`` the server closes its socket after that many requests.
    """
    port = free_port()
    served = Served(f"http://127.0.0.1:{port}", port)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with lock:
                served.requests.append(path)
                n = len(served.requests)
            if die_after is not None and n > die_after:
                threading.Thread(target=kill, daemon=True).start()
                self.close_connection = True
                self.connection.close()
                return
            file = directory / path.lstrip("/")
            if hook is not None and hook(self, path, file):
                return
            if not file.is_file():
                send(self, 404, b"not found")
                return
            send(self, 200, file.read_bytes())

    def kill() -> None:
        server.shutdown()
        server.server_close()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
         headers: dict[str, str] | None = None, length: int | None = None) -> None:
    """Answer a request; ``length`` may claim more bytes than sent (truncation)."""
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)
    if length is not None:
        handler.close_connection = True


# ---- repositories made by the real ostree --------------------------------------------


@dataclass
class OstreeSource:
    """An archive repository made by ``ostree``: ``main`` with two commits, ``other`` with one."""

    path: Path
    tree: Path
    c1: str
    c2: str
    other: str
    new_file: str  # checksum of a content object only in c2
    new_dirtree: str  # checksum of a dirtree only in c2

    def object_file(self, csum: str, ext: str) -> Path:
        return self.path / "objects" / csum[:2] / f"{csum[2:]}.{ext}"


def ostree(*args: str | os.PathLike[str]) -> str:
    proc = subprocess.run(["ostree", *map(os.fspath, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"ostree {args} failed: {proc.stderr}")
    return proc.stdout


def fill_tree(root: Path, n: int = 40) -> None:
    import random

    rnd = random.Random(42)
    for d in ("usr/bin", "usr/lib/deep/er", "etc/conf.d", "var/empty"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "usr/bin" / f"tool{i}").write_bytes(rnd.randbytes(200 + 997 * i))
    (root / "usr/lib/deep/er/big.bin").write_bytes(rnd.randbytes(300_000))
    (root / "usr/bin/tool1").chmod(0o755)
    (root / "etc/conf.d/a.conf").write_text("a=1\n")
    (root / "etc/empty-file").write_bytes(b"")
    (root / "etc/link").symlink_to("../usr/bin/tool0")
    (root / "etc/dangling").symlink_to("/nonexistent/target")


def make_ostree_source(base: Path) -> OstreeSource:
    repo, tree = base / "src", base / "tree"
    ostree("init", f"--repo={repo}", "--mode=archive")
    fill_tree(tree)
    c1 = ostree("commit", f"--repo={repo}", "-b", "main", "-s", "one",
                "--timestamp=@1700000000", str(tree)).strip()
    (tree / "etc/conf.d/new.conf").write_text("this file is new in the second commit\n")
    (tree / "usr/lib/newdir").mkdir()
    (tree / "usr/lib/newdir/x").write_text("x")
    (tree / "usr/bin/tool3").write_bytes(b"modified" * 1000)
    big = bytearray((tree / "usr/lib/deep/er/big.bin").read_bytes())
    big[150_000:150_010] = b"0123456789"
    (tree / "usr/lib/deep/er/big.bin").write_bytes(bytes(big))
    t39 = bytearray((tree / "usr/bin/tool39").read_bytes())
    t39[100:110] = b"abcdefghij"
    (tree / "usr/bin/tool39").write_bytes(bytes(t39) + b"tail")
    c2 = ostree("commit", f"--repo={repo}", "-b", "main", "-s", "two",
                "--timestamp=@1700000100", "--add-metadata-string=version=2.0", str(tree)).strip()
    other = ostree("commit", f"--repo={repo}", "-b", "other", "-s", "other",
                   "--timestamp=@1700000200", str(tree / "etc")).strip()
    ostree("summary", "-u", f"--repo={repo}")
    new_file = ostree("ls", f"--repo={repo}", "-C", "main", "/etc/conf.d/new.conf").split()[4]
    new_dirtree = ostree("ls", f"--repo={repo}", "-C", "-d", "main", "/usr/lib/newdir").split()[4]
    return OstreeSource(repo, tree, c1, c2, other, new_file, new_dirtree)


def tree_listing(root: Path) -> dict[str, tuple[int, bytes]]:
    """path -> (mode, content or link target) for a checked-out tree."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = (st.st_mode, os.readlink(p).encode())
            elif p.is_dir():
                out[rel] = (st.st_mode, b"")
            else:
                out[rel] = (st.st_mode, p.read_bytes())
    return out


def checkout_listing(repo: Path, ref: str, dest: Path) -> dict[str, tuple[int, bytes]]:
    ostree("checkout", f"--repo={repo}", "-U", ref, str(dest))
    return tree_listing(dest)
