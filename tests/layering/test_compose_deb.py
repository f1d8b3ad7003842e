"""compose on a deb image: exact resolutions, file rules, scripts, database, reuse, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.images import deb_base_rootfs
from layering.compose import ComposeRequest, compose
from layering.dbinfo import diff, packages
from layering.errors import DepsolveError, FileConflictError, ScriptError
from store.checkout import checkout
from store.commit import commit_directory
from store.errors import ToolError
from store.fsck import fsck
from tests.layering.conftest import DebWorld
from tests.util import run


def _compose(w: DebWorld, branch: str, **kw: object) -> object:
    return compose(w.repo, ComposeRequest(base=w.base, branch=branch, sources=(w.source,),
                                          **kw))  # type: ignore[arg-type]


def _names(result: object) -> list[str]:
    return [p.nevra for p in result.resolution.install]  # type: ignore[attr-defined]


def test_resolves_exact_set_with_older_version_virtual_and_recommends(deb_world: DebWorld) -> None:
    r = _compose(deb_world, "t/hello", install=("hello",))
    assert _names(r) == ["hello-2.10-3.amd64", "hello-doc-2.10-3.all", "less-590-2.amd64",
                         "libgreet-1.0-1.amd64"]
    assert deb_world.repo.read_ref("t/hello") == r.checksum  # type: ignore[attr-defined]
    assert fsck(deb_world.repo).ok


def test_no_recommends(deb_world: DebWorld) -> None:
    r = _compose(deb_world, "t/norec", install=("hello",), no_recommends=True)
    assert "hello-doc-2.10-3.all" not in _names(r)


def test_same_input_returns_existing_commit(deb_world: DebWorld) -> None:
    first = _compose(deb_world, "t/again", install=("less",))
    again = _compose(deb_world, "t/again", install=("less",))
    assert again.checksum == first.checksum and again.reused  # type: ignore[attr-defined]
    assert again.layers == []  # type: ignore[attr-defined]


def test_unsatisfiable_dependency_is_explained(deb_world: DebWorld) -> None:
    with pytest.raises(DepsolveError) as e:
        _compose(deb_world, "t/nnl", install=("needs-new-libc",))
    first = str(e.value).splitlines()[0]
    assert first == ("cannot install needs-new-libc: requires libc6 (>= 3.0) but only "
                     "2.36-9 in @System is available")
    assert deb_world.repo.read_ref("t/nnl") is None


def test_conflicts_named(deb_world: DebWorld) -> None:
    with pytest.raises(DepsolveError, match="hates-hello.*conflicts with hello|hello.*hates-hello"):
        _compose(deb_world, "t/conf", install=("hello", "hates-hello"))


def test_file_clash_names_both_owners_and_path(deb_world: DebWorld) -> None:
    with pytest.raises(FileConflictError) as e:
        _compose(deb_world, "t/clash", install=("clash-a", "clash-b"))
    msg = str(e.value)
    assert "/usr/share/clash/file" in msg and "clash-a" in msg and "clash-b" in msg
    assert deb_world.repo.read_ref("t/clash") is None


def test_package_over_unowned_base_file_is_refused(deb_world: DebWorld) -> None:
    with pytest.raises(FileConflictError, match="/etc/motd.*over-base.*the base image"):
        _compose(deb_world, "t/over", install=("over-base",))


def test_directory_file_clashes_are_refused(deb_world: DebWorld) -> None:
    with pytest.raises(FileConflictError, match="/usr/lib/modules: file-over-dir ships a file "
                                                "where the base image has a directory"):
        _compose(deb_world, "t/fod", install=("file-over-dir",))
    with pytest.raises(FileConflictError, match="dir-over-file ships a directory where "
                                                "the base image has a file"):
        _compose(deb_world, "t/dof", install=("dir-over-file",))
    assert deb_world.repo.read_ref("t/fod") is None and deb_world.repo.read_ref("t/dof") is None


def test_replaces_lets_the_replacing_file_win(deb_world: DebWorld, tmp_path: Path) -> None:
    first = _compose(deb_world, "t/a", install=("clash-a",))
    r = compose(deb_world.repo, ComposeRequest(base=first.checksum, branch="t/ac",  # type: ignore[attr-defined]
                                               install=("clash-c",), sources=(deb_world.source,)))
    checkout(deb_world.repo, r.checksum, tmp_path / "co")  # type: ignore[attr-defined]
    assert (tmp_path / "co/usr/share/clash/file").read_text() == "from c\n"
    names = [p.name for p in packages(deb_world.repo, r.checksum)[1]]  # type: ignore[attr-defined]
    assert "clash-a" in names and "clash-c" in names
    listing = (tmp_path / "co/usr/lib/sysimage/dpkg/info/clash-a.list").read_text()
    assert "/usr/share/clash/file" not in listing


def test_scripts_ran_and_database_is_right(deb_world: DebWorld, tmp_path: Path) -> None:
    r = _compose(deb_world, "t/hello", install=("hello",))
    co = tmp_path / "co"
    checkout(deb_world.repo, r.checksum, co)  # type: ignore[attr-defined]
    assert (co / "usr/etc/hello.d/postinst-mark").read_text() == "hello-postinst ran\n"
    assert (co / "var/lib/hello-configured").read_text() == "configured hello\n"
    assert (co / "usr/etc/hello.d/hello.conf").read_text() == "greeting=hello\n"
    assert not (co / "etc").exists()
    tmpfiles = (co / "usr/lib/tmpfiles.d/strata-pkg-hello.conf").read_text()
    assert "C /var/lib/hello/state - - - - /usr/share/factory/var/lib/hello/state" in tmpfiles
    assert "d /var/lib/hello 0755 0 0 - -" in tmpfiles and "d /var " not in tmpfiles
    # the database a booted system's dpkg reads: its /var is the stateroot's, made by tmpfiles
    assert (co / "usr/lib/tmpfiles.d/strata-pkgdb.conf").read_text().splitlines()[1:] == [
        "L+ /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg"]
    admindir = co / "usr/lib/sysimage/dpkg"
    out = run(["dpkg-query", f"--admindir={admindir}", "-W", "-f", "${Package} ${Status}\\n"]).stdout
    assert sorted(out.splitlines()) == sorted(
        f"{n} install ok installed" for n in ("base-files", "busybox", "dpkg", "hello",
                                              "hello-doc", "less", "libc6", "libgreet"))
    assert "/usr/bin/hello" in run(["dpkg-query", f"--admindir={admindir}", "-L", "hello"]).stdout
    shutil.copytree(co / "usr/etc", co / "etc", symlinks=True)  # /etc as a deployment has it
    verify = run(["dpkg", f"--root={co}", f"--admindir={admindir}", "--verify"])
    assert verify.stdout == "" and verify.stderr == ""
    shutil.rmtree(co / "etc")
    proc = subprocess.run(["bwrap", "--bind", co, "/", "--ro-bind", co / "usr/etc", "/etc",
                           "--proc", "/proc", "--dev", "/dev", "--unshare-all", "/usr/bin/hello"],
                          capture_output=True, text=True)
    assert proc.stdout == "Hello, layered world!\n", proc.stderr
    (co / "usr/bin/hello").unlink()
    (co / "usr/bin/hello").write_text("tampered\n")
    tampered = subprocess.run(["dpkg", f"--root={co}", f"--admindir={admindir}", "--verify",
                               "hello"], capture_output=True, text=True)
    assert "/usr/bin/hello" in tampered.stdout


def test_failing_script_commits_nothing(deb_world: DebWorld) -> None:
    before = set(os.listdir(deb_world.repo.tmp_dir))
    with pytest.raises(ScriptError) as e:
        _compose(deb_world, "t/broken", install=("broken-post",))
    assert "postinst script of package broken-post failed (exit 3)" in str(e.value)
    assert "about to fail" in str(e.value)
    assert deb_world.repo.read_ref("t/broken") is None
    assert set(os.listdir(deb_world.repo.tmp_dir)) == before


def test_no_scripts_skips_them(deb_world: DebWorld, tmp_path: Path) -> None:
    r = _compose(deb_world, "t/noscripts", install=("broken-post",), no_scripts=True)
    assert r.checksum  # type: ignore[attr-defined]


def test_remove_refused_when_needed_then_allowed(deb_world: DebWorld) -> None:
    with pytest.raises(DepsolveError, match="cannot remove libc6: busybox requires libc6"):
        _compose(deb_world, "t/rm", remove=("libc6",))
    r = _compose(deb_world, "t/rm", remove=("dpkg",))
    names = [p.name for p in packages(deb_world.repo, r.checksum)[1]]  # type: ignore[attr-defined]
    assert "dpkg" not in names and "libc6" in names


def test_db_diff_added_removed_upgraded_downgraded(deb_world: DebWorld, tmp_path: Path) -> None:
    rootfs = deb_base_rootfs(tmp_path / "rootfs2", version="2")
    status = rootfs / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("Version: 2.36-9", "Version: 2.99-1"))
    base2 = commit_directory(deb_world.repo, rootfs, branch="base/next").checksum
    a = _compose(deb_world, "t/hello", install=("hello",))
    b = compose(deb_world.repo, ComposeRequest(base=base2, branch="t/hello2", install=("hello",),
                                               remove=("dpkg",), sources=(deb_world.source,)))
    d = diff(deb_world.repo, a.checksum, b.checksum)  # type: ignore[attr-defined]
    assert [(x.name, x.evr, y.evr) for x, y in d.upgraded] == [
        ("libc6", "2.36-9", "2.99-1"), ("libgreet", "1.0-1", "2.0-1")]
    assert [p.name for p in d.removed] == ["dpkg"] and d.added == ()
    back = diff(deb_world.repo, b.checksum, a.checksum)  # type: ignore[attr-defined]
    assert [x.name for x, _y in back.downgraded] == ["libc6", "libgreet"]
    assert [p.name for p in back.added] == ["dpkg"]


def test_dry_run_writes_nothing(deb_world: DebWorld, strata) -> None:  # type: ignore[no-untyped-def]
    refs = deb_world.repo.list_refs()
    proc = strata("--repo", deb_world.repo.path, "compose", "-b", "t/dry", "--base", "base/stable",
                  "--install", "hello", "--source", deb_world.source, "--dry-run")
    assert "install libgreet 1.0-1 amd64" in proc.stdout
    assert "4 to install, 0 to remove" in proc.stdout
    assert deb_world.repo.list_refs() == refs


def test_cli_errors_are_one_line_plus_explanation(deb_world: DebWorld, strata) -> None:  # type: ignore[no-untyped-def]
    proc = strata("--repo", deb_world.repo.path, "compose", "-b", "t/x", "--base", "base/stable",
                  "--install", "no-such-package", "--source", deb_world.source, check=False)
    assert proc.returncode == 1
    assert proc.stderr == "error: cannot install no-such-package: no package provides it " \
                          "in the sources\n"


def test_offline_uses_cache_only(deb_world: DebWorld, tmp_path: Path) -> None:
    _compose(deb_world, "t/hello", install=("hello",))
    deb_world.served.stop()
    auto = compose(deb_world.repo, ComposeRequest(base=deb_world.base, branch="t/unreachable",
                                                  install=("hello",), sources=(deb_world.source,),
                                                  no_scripts=True))
    assert auto.downloaded == 0 and len(auto.resolution.install) == 4  # type: ignore[attr-defined]
    r = compose(deb_world.repo, ComposeRequest(base=deb_world.base, branch="t/offline",
                                               install=("hello",), sources=(deb_world.source,),
                                               offline=True, no_scripts=True))
    assert r.downloaded == 0 and len(r.resolution.install) == 4  # type: ignore[attr-defined]
    with pytest.raises(ToolError, match="not in the cache"):
        compose(deb_world.repo, ComposeRequest(base=deb_world.base, branch="t/offline2",
                                               install=("needs-busybox",), sources=(deb_world.source,),
                                               offline=True))


def test_dpkg_info_keeps_control_members_byte_for_byte(deb_world: DebWorld,
                                                        tmp_path: Path) -> None:
    """dpkg installs shlibs, symbols and md5sums into its info directory as the package has
    them (md5sums in the package's order, not sorted)."""
    root = tmp_path / "libzz"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/libzz.so.1").write_bytes(b"zz\n")
    (root / "usr/lib/libaa.so.1").write_bytes(b"aa\n")
    (root / "DEBIAN/control").write_text(
        "Package: libzz1\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: zz\n")
    members = {"shlibs": b"libzz 1 libzz1 (>= 1.0)\n",
               "symbols": b"libzz.so.1 libzz1 #MINVER#\n zz@Base 1.0\n",
               "md5sums": b"5cb2c1c1c6dfa4eec9d6b6a4a9c6b0e1  usr/lib/libzz.so.1\n"
                          b"0e4e1fc1e3f1e9b8c2d5a7a5bd1a2c3d  usr/lib/libaa.so.1\n"}
    for name, data in members.items():
        (root / "DEBIAN" / name).write_bytes(data)
    deb = tmp_path / "libzz1_1.0_all.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", root, deb])
    r = _compose(deb_world, "t/ctrl", install_local=(deb,), no_scripts=True)
    co = tmp_path / "co"
    checkout(deb_world.repo, r.checksum, co)  # type: ignore[attr-defined]
    info = co / "usr/lib/sysimage/dpkg/info"
    for name, data in members.items():
        assert (info / f"libzz1.{name}").read_bytes() == data, name
        assert (info / f"libzz1.{name}").stat().st_mode & 0o777 == 0o644


def test_dpkg_info_keeps_scripts_that_are_not_utf8(deb_world: DebWorld, tmp_path: Path) -> None:
    """A maintainer script with latin-1 bytes (exim4-config's config script has 14) lands in
    dpkg's info directory byte for byte, and runs."""
    root = tmp_path / "latin"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: latin\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: latin-1 comments\n")
    scripts = {"config": b"#!/bin/sh\n# G\xf6ran's question\nexit 0\n",
               "postinst": b"#!/bin/sh\n# K\xf6nig\xf6\necho ran > /var/lib/latin-mark\n"}
    for name, data in scripts.items():
        (root / "DEBIAN" / name).write_bytes(data)
        (root / "DEBIAN" / name).chmod(0o755)
    deb = tmp_path / "latin_1.0_all.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", root, deb])
    r = _compose(deb_world, "t/latin", install_local=(deb,))
    co = tmp_path / "co"
    checkout(deb_world.repo, r.checksum, co)  # type: ignore[attr-defined]
    for name, data in scripts.items():
        assert (co / f"usr/lib/sysimage/dpkg/info/latin.{name}").read_bytes() == data, name
    assert (co / "var/lib/latin-mark").read_text() == "ran\n"


def test_dbus_machine_id_made_by_a_script_is_not_shipped(deb_world: DebWorld,
                                                         tmp_path: Path) -> None:
    """``dbus-uuidgen --ensure`` in a postinst makes /var/lib/dbus/machine-id: host identity,
    so the image has no such file and no tmpfiles line (dbus's own L line links it to the
    host's /etc/machine-id at boot)."""
    root = tmp_path / "uuid"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: fake-dbus\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: makes a machine id\n")
    (root / "DEBIAN/postinst").write_text(
        "#!/bin/sh\nset -e\nmkdir -p /var/lib/dbus\n"
        "echo 0123456789abcdef0123456789abcdef > /var/lib/dbus/machine-id\n")
    (root / "DEBIAN/postinst").chmod(0o755)
    deb = tmp_path / "fake-dbus_1.0_all.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", root, deb])
    r = _compose(deb_world, "t/dbus", install_local=(deb,), client_layer=True)
    co = tmp_path / "co"
    checkout(deb_world.repo, r.checksum, co)  # type: ignore[attr-defined]
    assert (co / "var/lib/dbus").is_dir()
    assert not os.path.lexists(co / "var/lib/dbus/machine-id")
    confs = "".join(p.read_text() for p in (co / "usr/lib/tmpfiles.d").glob("strata-*.conf"))
    assert "machine-id" not in confs and "d /var/lib/dbus " in confs
    assert not (co / "usr/share/factory/var/lib/dbus/machine-id").exists()
