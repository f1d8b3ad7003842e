"""urllib3's pools whose connections report to the running request's watch
(:mod:`store.replication.http_watch`).

Kept apart so that urllib3 (and ssl, http.client) load only when an
``http(s)://`` URL is fetched: a ``file://`` pull or an offline compose never
needs them.
"""

from __future__ import annotations

import socket

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from store.replication.http_watch import attach_current


class _Watched:
    """Mixed into urllib3's connections: each socket joins the current request's watch."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        attach_current(sock)
        return sock

    def getresponse(self, *args, **kw):  # type: ignore[no-untyped-def]
        attach_current(self.sock)
        return super().getresponse(*args, **kw)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedTLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


WATCHED_POOLS = {"http": _WatchedPool, "https": _WatchedTLSPool}


def make_pool(proxy: str, maxsize: int, timeout: float,
              ca_certs: str | None) -> urllib3.PoolManager:
    """A pool manager (through ``proxy`` unless empty) of at most ``maxsize`` connections
    per host whose connections report to the request's watch."""
    kw = dict(num_pools=8, maxsize=maxsize, block=True,
              timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout))
    if ca_certs:
        kw["ca_certs"] = ca_certs
    pool = (urllib3.ProxyManager(proxy, **kw) if proxy  # type: ignore[arg-type]
            else urllib3.PoolManager(**kw))  # type: ignore[arg-type]
    pool.pool_classes_by_scheme = WATCHED_POOLS
    return pool
