"""store.replication.http against real local servers (http.server, nginx, a hostile in-process one)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

import pytest

from store.errors import NetworkError
from store.replication.http import SPILL_SIZE, Fetcher, NotFoundError, TooLargeError
from tests.store.servers import free_port, hostile_server, http_server, nginx_server, send


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    (d / "sub").mkdir(parents=True)
    for i in range(40):
        (d / "sub" / f"f{i}").write_bytes(bytes([i]) * (1000 + i))
    (d / "summary").write_bytes(b"S" * 10)
    return d


def test_get_and_404_python_http_server(docroot: Path) -> None:
    with http_server(docroot) as srv, Fetcher(srv.url) as f:
        assert f.get("summary") == b"S" * 10
        assert f.get_optional("nope") is None
        with pytest.raises(NotFoundError, match="nope"):
            f.get("nope")
        assert f.stats.requests == 3


def test_file_url(docroot: Path) -> None:
    f = Fetcher(docroot.as_uri())
    assert f.get("sub/f3") == bytes([3]) * 1003
    with pytest.raises(NotFoundError, match="missing"):
        f.get("missing")


def test_parallel_on_reused_connections(docroot: Path, tmp_path: Path) -> None:
    active = 0
    peak = 0
    lock = threading.Lock()
    ports: set[int] = set()

    def slow(handler, path, file):  # type: ignore[no-untyped-def]
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            ports.add(handler.client_address[1])
        time.sleep(0.05)
        with lock:
            active -= 1
        return False

    with hostile_server(docroot, slow) as srv, Fetcher(srv.url, max_in_flight=8) as f:
        paths = [f"sub/f{i}" for i in range(40)]
        got = dict(f.map_unordered(lambda p: (p, f.get(p)), paths))
    assert got["sub/f7"] == bytes([7]) * 1007 and len(got) == 40
    assert peak >= 8
    assert len(ports) <= 8  # 40 requests over at most 8 kept-alive connections


def test_nginx_keepalive_log(docroot: Path, tmp_path: Path) -> None:
    with nginx_server(docroot, tmp_path / "nginx") as srv, Fetcher(srv.url) as f:
        list(f.map_unordered(f.get, [f"sub/f{i}" for i in range(20)]))
        time.sleep(0.1)
        assert sorted(srv.fetched()) == sorted(f"/sub/f{i}" for i in range(20))


def test_retry_on_5xx_then_success(docroot: Path) -> None:
    count = {"n": 0}

    def flaky(handler, path, file):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] <= 2:
            send(handler, 503, b"busy")
            return True
        return False

    with hostile_server(docroot, flaky) as srv, Fetcher(srv.url, backoff=0.01) as f:
        assert f.get("summary") == b"S" * 10
    assert count["n"] == 3


def test_persistent_5xx_names_url(docroot: Path) -> None:
    def broken(handler, path, file):  # type: ignore[no-untyped-def]
        send(handler, 500, b"")
        return True

    with hostile_server(docroot, broken) as srv, Fetcher(srv.url, backoff=0.01) as f:
        with pytest.raises(NetworkError, match=r"HTTP 500 fetching .*/summary"):
            f.get("summary")


def test_truncated_body_is_an_error(docroot: Path) -> None:
    def truncate(handler, path, file):  # type: ignore[no-untyped-def]
        send(handler, 200, b"abc", length=100)
        return True

    with hostile_server(docroot, truncate) as srv, Fetcher(srv.url, backoff=0.01) as f:
        with pytest.raises(NetworkError, match=r"truncated response fetching .*/summary"):
            f.get("summary")


def test_redirect_loop_and_redirect_follow(docroot: Path) -> None:
    def redirect(handler, path, file):  # type: ignore[no-untyped-def]
        if path == "/loop":
            send(handler, 302, b"", {"Location": "/loop"})
            return True
        if path == "/moved":
            send(handler, 301, b"", {"Location": "/summary"})
            return True
        return False

    with hostile_server(docroot, redirect) as srv, Fetcher(srv.url) as f:
        assert f.get("moved") == b"S" * 10
        with pytest.raises(NetworkError, match=r"too many redirects fetching .*/loop"):
            f.get("loop")


def test_connection_refused_after_retries() -> None:
    port = free_port()
    f = Fetcher(f"http://127.0.0.1:{port}/repo", backoff=0.01)
    t0 = time.monotonic()
    url = f"http://127.0.0.1:{port}/repo/x"
    with pytest.raises(NetworkError, match=rf"cannot reach {re.escape(url)}: connection refused \(after 4 attempts\)"):
        f.get("x")
    assert time.monotonic() - t0 < 5


def test_proxy_env_honoured(docroot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def proxy(handler, path, file):  # type: ignore[no-untyped-def]
        seen.append(handler.path)
        send(handler, 200, b"via-proxy")
        return True

    with hostile_server(docroot, proxy) as prox:
        monkeypatch.setenv("http_proxy", prox.url)
        monkeypatch.setenv("no_proxy", "")
        f = Fetcher("http://repo.invalid/base")
        assert f.get("summary") == b"via-proxy"
        assert seen == ["http://repo.invalid/base/summary"]
        monkeypatch.setenv("no_proxy", "repo.invalid")
        with pytest.raises(NetworkError):
            Fetcher("http://repo.invalid/base", retries=0).get("summary")


def test_unsupported_scheme() -> None:
    with pytest.raises(NetworkError, match="ftp://x"):
        Fetcher("ftp://x/")


def test_fetch_many_pipelined_survives_connection_limits(docroot: Path, tmp_path: Path) -> None:
    with nginx_server(docroot, tmp_path / "nginx", extra="keepalive_requests 7;") as srv, \
            Fetcher(srv.url, max_in_flight=3) as f:
        paths = [f"sub/f{i}" for i in range(40)] * 3
        got = list(f.fetch_many(paths, lambda p, d: (p, d)))
    assert sorted(got) == sorted((p, bytes([int(p[5:])]) * (1000 + int(p[5:]))) for p in paths)
    assert f.stats.requests == 120


def test_fetch_many_falls_back_on_errors(docroot: Path) -> None:
    def odd(handler, path, file):  # type: ignore[no-untyped-def]
        if path == "/sub/f5":
            send(handler, 302, b"", {"Location": "/sub/f6"})
            return True
        if path == "/sub/f9":
            send(handler, 404, b"no")
            return True
        return False

    with hostile_server(docroot, odd) as srv, Fetcher(srv.url) as f:
        got = dict(f.fetch_many([f"sub/f{i}" for i in range(9)], lambda p, d: (p, d)))
        assert got["sub/f5"] == got["sub/f6"] and got["sub/f8"] == bytes([8]) * 1008
        with pytest.raises(NotFoundError, match="sub/f9"):
            list(f.fetch_many([f"sub/f{i}" for i in range(12)], lambda p, d: d))


def test_https_with_ca_file(docroot: Path, tmp_path: Path) -> None:
    from tests.util import require_tool, run

    require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"])
    with nginx_server(docroot, tmp_path / "nginx", tls=(cert, key)) as srv:
        assert srv.url.startswith("https://")
        with Fetcher(srv.url, ca_certs=str(cert)) as f:
            assert f.get("summary") == b"S" * 10
            assert len(list(f.fetch_many([f"sub/f{i}" for i in range(20)], lambda p, d: d))) == 20
        with pytest.raises(NetworkError, match="summary"):
            Fetcher(srv.url, retries=0).get("summary")  # not trusted without the CA file


def test_fetch_many_stops_pipelining_on_http10_server(docroot: Path) -> None:
    with http_server(docroot) as srv, Fetcher(srv.url) as f:
        got = list(f.fetch_many([f"sub/f{i}" for i in range(40)], lambda p, d: len(d)))
        assert sorted(got) == [1000 + i for i in range(40)]
        assert f._pipelining is False


def test_caps_announced_streamed_and_file(docroot: Path) -> None:
    """A body over the cap fails: announced (before reading), streamed without a length
    (never more than cap+1 bytes read), and from file:// (even an endless /dev/zero)."""
    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == "/endless":
            h.send_response(200)
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            with contextlib.suppress(OSError):
                for _ in range(64):
                    h.wfile.write(b"z" * 65536)
            return True
        return False

    with hostile_server(docroot, hook) as srv, Fetcher(srv.url) as f:
        assert f.get("sub/f1", limit=1001) == bytes([1]) * 1001
        with pytest.raises(TooLargeError, match=r"/sub/f1 is larger than 1000 bytes \(1001"):
            f.get("sub/f1", limit=1000)
        with pytest.raises(TooLargeError, match=r"/endless is larger than 100000 bytes$"):
            f.get("endless", limit=100_000)
        assert f.stats.bytes <= 1001 + 100_001 + 65536
    with pytest.raises(TooLargeError, match="larger than 1000 bytes"):
        Fetcher("file:///dev").get("zero", limit=1000)


def test_fetch_many_spills_big_bodies_to_files(docroot: Path, tmp_path: Path) -> None:
    (docroot / "big").write_bytes(b"B" * (SPILL_SIZE + 1))
    spill = tmp_path / "spill"
    spill.mkdir()
    seen: dict[str, object] = {}

    def fn(path: str, body: bytes | Path) -> None:
        seen[path] = body if isinstance(body, bytes) else (body.parent, body.stat().st_size)

    with hostile_server(docroot) as srv, Fetcher(srv.url) as f:
        list(f.fetch_many(["sub/f2", "big"], fn, limit=SPILL_SIZE * 2, spill_dir=spill))
    assert seen == {"sub/f2": bytes([2]) * 1002, "big": (spill, SPILL_SIZE + 1)}
    assert list(spill.iterdir()) == []


def test_redirect_to_file_url_refused(docroot: Path) -> None:
    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == "/evil":
            send(h, 302, b"", {"Location": "file:///etc/passwd"})
            return True
        return False

    with hostile_server(docroot, hook) as srv, Fetcher(srv.url) as f:
        with pytest.raises(NetworkError, match=r"redirect to a non-HTTP URL fetching \S+/evil"):
            f.get("evil")


def test_trickling_headers_hit_the_low_speed_limit(docroot: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that sends its status line one byte a second is given up after the
    low-speed time, not after 30 s a byte."""
    gave_up = threading.Event()

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            for c in b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx":
                h.wfile.write(bytes([c]))
                h.wfile.flush()
                time.sleep(1)
            return True
        gave_up.set()
        return True

    monkeypatch.setenv("STRATA_HTTP_LOW_SPEED_TIME", "1")
    with hostile_server(docroot, hook) as srv, Fetcher(srv.url, retries=0) as f:
        with pytest.raises(NetworkError, match=r"transfer too slow \(under 1000 bytes/s for "
                                               r"1 s\) fetching \S+/slow$"):
            f.get("slow")
        assert gave_up.wait(60)
