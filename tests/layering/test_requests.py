"""Requests behave as rpm-ostree's: a package asked twice, a package the base provides, an
upgrade with nothing new, --download-only/--cache-only, deploy --version/rebase --version
(override-commit), every deployment's base kept from prune, pins that stay with their
deployment, cleanup of unused package-cache commits."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.images import deb_base_rootfs, ostree_layout
from store.commit import commit_directory
from tests.layering.test_client import Host, make_host
from tests.util import require_tool, run


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    require_tool("ostree")
    sysroot = tmp_path / "sysroot"
    yield from make_host(sysroot, tmp_path)
    subprocess.run(["chattr", "-R", "-i", str(sysroot)], capture_output=True)


def refused(h: Host, *args: object) -> str:
    p = h.strata(*args, check=False)
    line = p.stderr.strip()
    assert p.returncode == 1 and "\n" not in line and line.startswith("error: "), p.stderr
    return line


def fsck(h: Host) -> None:
    run(["ostree", "fsck", f"--repo={h.repo.path}"])


def test_install_twice_is_refused_unless_idempotent(host: Host) -> None:
    host.strata("install", "less")
    before = host.status()
    assert refused(host, "install", "less") == (
        "error: package less is already requested in the default deployment; "
        "use --idempotent to ignore this")
    assert host.status() == before
    assert host.strata("install", "--idempotent", "less").stdout.startswith("No change")
    assert host.status() == before


def test_local_file_twice_is_refused_naming_the_path(host: Host) -> None:
    deb = next(d for d in host.debs if d.name.startswith("clash-a"))
    host.strata("install", str(deb))
    before = host.status()
    assert str(deb) in refused(host, "install", str(deb))
    assert host.status() == before


def test_package_the_base_provides_is_refused_unless_allow_inactive(host: Host) -> None:
    before = host.status()
    line = refused(host, "install", "busybox")
    assert line.startswith("error: package busybox is already provided by the base ")
    assert line.endswith("; use --allow-inactive to request it anyway")
    assert host.status() == before
    host.strata("install", "--allow-inactive", "busybox")
    assert "InactiveRequests: busybox" in host.strata("status").stdout
    assert host.status()[0]["requested-packages"] == ["busybox"]


def test_upgrade_with_nothing_new_makes_no_deployment(host: Host) -> None:
    host.strata("install", "less")
    before = host.status()
    assert len(before) == 2
    assert host.strata("upgrade").stdout == "No upgrade available.\n"
    assert host.status() == before  # the rollback target is still the first deployment
    host.commit_base("2")
    host.strata("upgrade")
    st = host.status()
    assert st[0]["version"] == "2" and st[1]["checksum"] == before[0]["checksum"]


def test_download_only_then_cache_only_with_the_server_down(host: Host) -> None:
    before = host.status()
    out = host.strata("install", "--download-only", "hello").stdout
    assert out == "4 packages in the cache (4 downloaded, 4 unpacked); nothing deployed\n"
    assert host.status() == before
    assert host.served is not None
    host.served.stop()
    out = host.strata("install", "--cache-only", "hello").stdout
    assert out.startswith("4 packages layered (0 downloaded, 0 unpacked)")
    assert host.status()[0]["requested-packages"] == ["hello"]
    fsck(host)


def test_deploy_over_a_layered_default_warns_and_points_to_rebase(host: Host) -> None:
    host.strata("install", "less")
    p = host.strata("deploy", "os/stable")
    assert ("warning: the default deployment's layered packages and overrides (less) are not "
            "in the new deployment; use 'strata rebase os/stable' to keep them") in p.stderr
    assert host.status()[0]["requested-packages"] == []
    assert "warning" not in host.strata("deploy", "os/stable").stderr


def _origin(h: Host) -> str:
    d = h.deploy_dir()
    return (d.parent / f"{d.name}.origin").read_text()


def test_deploy_and_rebase_version_kept_by_install_cleared_by_upgrade(host: Host) -> None:
    v2 = host.commit_base("2")
    host.commit_base("3")
    host.strata("deploy", "--version", "2", "os/stable")
    st = host.status()[0]
    assert st["checksum"] == v2 and f"override-commit={v2}" in _origin(host)
    sources = host.deploy_dir() / "etc/apt/sources.list.d"
    (sources / "local.list").write_text(host.source_line + "\n")
    host.strata("install", "less")
    st = host.status()[0]
    assert st["base-checksum"] == v2 and f"override-commit={v2}" in _origin(host)
    host.strata("upgrade")
    st = host.status()[0]
    assert st["version"] == "3" and "override-commit" not in _origin(host)
    assert st["requested-packages"] == ["less"]
    host.strata("rebase", "--allow-downgrade", "--version", "2", "os/stable")
    st = host.status()[0]
    assert st["base-checksum"] == v2 and st["requested-packages"] == ["less"]
    assert f"override-commit={v2}" in _origin(host) and "baserefspec=os/stable" in _origin(host)
    host.strata("install", "hello-doc")
    assert host.status()[0]["base-checksum"] == v2 and f"override-commit={v2}" in _origin(host)
    line = refused(host, "rebase", "--version", "9", "os/stable")
    assert line == "error: version 9 not found in the history of os/stable"


def test_upgrade_rollback_install_finds_the_old_base(host: Host) -> None:
    host.strata("install", "less")
    host.commit_base("2")
    host.strata("upgrade")
    host.strata("rollback")
    host.strata("install", "hello-doc")
    st = host.status()[0]
    assert st["version"] == "1" and st["requested-packages"] == ["hello-doc", "less"]
    fsck(host)


def test_rebase_to_a_checksum_then_install_keeps_every_base(host: Host) -> None:
    host.strata("install", "less")
    root = ostree_layout(deb_base_rootfs(host.tmp / "other", version="other"))
    other = commit_directory(host.repo, root, branch="os/other",
                             metadata=[("version", "other")]).checksum
    host.strata("rebase", "--allow-downgrade", other)
    host.repo.set_ref("os/other", None)
    host.strata("install", "hello-doc")
    host.strata("rollback")
    host.strata("install", "hello-doc")
    assert host.status()[0]["base-checksum"] == other
    fsck(host)


def test_a_pin_stays_with_its_deployment(host: Host) -> None:
    host.strata("pin", "0")
    host.strata("install", "less")
    st = host.status()
    assert [d["pinned"] for d in st] == [False, True]
    assert "libostree-transient" not in _origin(host)


def test_cleanup_removes_package_cache_commits_no_deployment_uses(host: Host) -> None:
    host.strata("install", "hello")
    first = host.status()[0]["checksum"]
    host.strata("uninstall", "hello")
    host.strata("install", "less")
    pkg_refs = {r for r in host.repo.list_refs() if r.startswith("strata/pkg/")}
    assert any("/hello/" in r for r in pkg_refs) and any("/less/" in r for r in pkg_refs)
    out = host.strata("cleanup").stdout
    left = {r for r in host.repo.list_refs() if r.startswith("strata/pkg/")}
    assert [r for r in left if "/less/" in r] and not [r for r in left if "/hello/" in r]
    assert "removed 3 unused cached packages\n" in out and " bytes freed" in out
    freed = int(out.split(" bytes freed")[0].rsplit(" ", 1)[1])
    assert freed > 0
    assert first not in [d["checksum"] for d in host.status()]
    fsck(host)
    cache = host.repo.path / "tmp/cache/http"
    assert cache.is_dir()
    out = host.strata("cleanup", "-m").stdout
    assert f"removed cached indexes {cache} (" in out and not cache.exists()
    assert "unused cached packages" not in out
    host.strata("install", "hello-doc")  # indexes fetched again
    fsck(host)


def _ar_members(data: bytes) -> list[tuple[str, bytes]]:
    assert data.startswith(b"!<arch>\n")
    out, pos = [], 8
    while pos + 60 <= len(data):
        name, size = data[pos:pos + 16].decode().strip().rstrip("/"), int(data[pos + 48:pos + 58])
        out.append((name, data[pos + 60:pos + 60 + size]))
        pos += 60 + size + (size & 1)
    return out


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, body in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body
        out += b"\n" if len(body) & 1 else b""
    return out


def test_bad_deb_is_named_by_the_path_given(host: Host) -> None:
    """A package whose control is fine but whose payload is not fails while it is unpacked
    from the cache's copy (named by its SHA256): the error names the file the user gave."""
    deb = next(d for d in host.debs if d.name.startswith("clash-a"))
    members = [(n, b) if not n.startswith("data.tar") else ("data.tar.gz", b"\x1f\x8bnot gzip")
               for n, b in _ar_members(deb.read_bytes())]
    bad = host.tmp / "mine" / "broken_1.0_all.deb"
    bad.parent.mkdir()
    bad.write_bytes(_ar(members))
    before = host.status()
    line = refused(host, "install", str(bad))
    assert str(bad) in line and "/cache/local/" not in line, line
    assert host.status() == before


def test_offline_compose_needs_no_uncached_source_it_does_not_use(host: Host) -> None:
    """The image names a source nobody ever fetched: --offline composes local packages whose
    dependencies the base has; a request that does need the source names the package."""
    unused = "deb [trusted=yes] http://127.0.0.1:9/never stable main\n"
    host.commit_base("2", extra={"etc/apt/sources.list.d/never.list": unused})
    debs = [str(d) for d in host.debs if d.name.startswith(("clash-a", "hello-doc"))]
    args = [a for d in debs for a in ("--install-local", d)]
    out = host.strata("--repo", host.repo.path, "compose", "-b", "os/derived", "--base",
                      "os/stable", "--offline", *args).stdout
    csum = out.split()[-1]
    assert host.repo.read_ref("os/derived") == csum
    line = refused(host, "--repo", host.repo.path, "compose", "-b", "os/derived2", "--base",
                   "os/stable", "--offline", "--install", "hello")
    assert "hello" in line and "http://127.0.0.1:9/never" in line, line
    assert host.repo.read_ref("os/derived2") is None
    fsck(host)


def test_network_down_uses_the_cached_index_with_a_warning_of_its_age(host: Host) -> None:
    host.strata("install", "--download-only", "less")
    assert host.served is not None
    host.served.stop()
    p = host.strata("install", "less")
    assert p.stderr.startswith(f"warning: the network is unreachable; using the cached index "
                               f"of {host.served.url} stable, "), p.stderr
    assert p.stderr.endswith(" old\n")
    assert host.status()[0]["requested-packages"] == ["less"]
