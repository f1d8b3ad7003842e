"""Progress of long commands: ``--progress-fd N`` JSON lines, the terminal display, ``-q``.

Every command runs as a real ``strata`` process; the pseudo-terminal tests put
its stderr on a pty (python's ``pty`` module) and its stdout on a pipe.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.images import build_deb
from store.repo import Repo, RepoMode
from tests.layering.conftest import DebWorld
from tests.layering.test_client import Host, host  # noqa: F401 - the fixture
from tests.store.servers import OstreeSource, make_ostree_source
from tests.util import ROOT, require_tool

KEYS = {"stage", "done", "total", "bytes"}
COMPOSE_STAGES = ["resolve", "download", "unpack", "assemble", "scripts", "commit"]


def strata_fd(*args: object, env: dict[str, str] | None = None) -> tuple[
        subprocess.CompletedProcess[str], list[dict[str, object]]]:
    """Run strata with ``--progress-fd N`` (N: a pipe's write end) after the command's
    name; return the process and the JSON objects read from the pipe."""
    read, write = os.pipe()
    argv = [os.fspath(a) for a in args]
    cmd_at = next(i for i, a in enumerate(argv) if not a.startswith("-")
                  and (i == 0 or argv[i - 1] not in ("--repo", "--sysroot")))
    words = 2 if argv[cmd_at] in ("static-delta", "bundle") else 1
    argv[cmd_at + words:cmd_at + words] = ["--progress-fd", str(write)]
    full_env = {k: v for k, v in os.environ.items() if k not in ("STRATA_REPO", "STRATA_SYSROOT")}
    proc = subprocess.Popen([sys.executable, "-m", "layering", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, pass_fds=(write,), cwd=ROOT,
                            env={**full_env, **(env or {})})
    os.close(write)
    with os.fdopen(read, "rb") as f:
        lines = f.read().decode().splitlines()
    out, err = proc.communicate(timeout=600)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert proc.returncode == 0, f"{argv}: {err}"
    return done, [json.loads(line) for line in lines]


def check_events(events: list[dict[str, object]]) -> list[str]:
    """Every event has the keys, ``done <= total``; every stage ends with done == total;
    return the stages in the order they started."""
    order: list[str] = []
    last: dict[str, dict[str, object]] = {}
    for e in events:
        assert set(e) == KEYS, e
        assert isinstance(e["done"], int) and isinstance(e["bytes"], int) and e["done"] >= 0
        if e["total"] is not None:
            assert e["done"] <= e["total"], e  # type: ignore[operator]
        if not order or order[-1] != e["stage"]:
            order.append(str(e["stage"]))
        last[str(e["stage"])] = e
    for e in last.values():
        assert e["done"] == e["total"], e
    return order


def on_pty(*args: object, pass_fds: tuple[int, ...] = ()) -> tuple[int, str, bytes]:
    """Run strata with stderr on a pseudo-terminal: (exit status, stdout, stderr bytes)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("STRATA_REPO", None)
    env.pop("STRATA_SYSROOT", None)
    proc = subprocess.Popen([sys.executable, "-m", "layering", *map(os.fspath, args)],
                            stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env=env, text=True,
                            pass_fds=pass_fds)
    os.close(slave)
    err = b""
    while True:  # ends at EOF (EIO) once the process and its children are gone
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> OstreeSource:
    require_tool("ostree")
    return make_ostree_source(tmp_path_factory.mktemp("progress-src"))


def client(tmp_path: Path, source: OstreeSource) -> Path:
    dst = tmp_path / "dst"
    Repo.init(dst, RepoMode.BARE)
    subprocess.run([sys.executable, "-m", "layering", "--repo", str(dst), "remote", "add",
                    "--no-sign-verify", "origin", source.path.as_uri()], check=True, cwd=ROOT)
    return dst


def test_pull_progress_fd(source: OstreeSource, tmp_path: Path) -> None:
    dst = client(tmp_path, source)
    proc, events = strata_fd("--repo", dst, "pull", "origin", "main")
    assert check_events(events) == ["pull-metadata", "pull-content"]
    assert proc.stderr == ""  # not a terminal: no display
    assert proc.stdout.count("\n") == 1
    fetched = int(proc.stdout.split(": ")[1].split()[0])
    assert sum(e["total"] for e in events if e["done"] == e["total"] and e["total"]) \
        >= fetched  # type: ignore[misc]


def test_pull_counter_never_passes_the_total(source: OstreeSource, tmp_path: Path) -> None:
    """The commit object was counted as fetched but never as wanted (11679/11678)."""
    from store.replication.pull import pull

    dst = client(tmp_path, source)
    seen: list[tuple[int, int]] = []

    def record(p: object) -> None:  # the old Progress record, or a ProgressEvent
        done = getattr(p, "done", getattr(p, "objects_fetched", None))
        total = getattr(p, "total", getattr(p, "objects_wanted", None))
        seen.append((done, total))  # type: ignore[arg-type]

    result = pull(dst, "origin", ["main"], progress=record)
    assert seen and result.objects_fetched > 0
    assert all(done <= total for done, total in seen), [s for s in seen if s[0] > s[1]]


def test_pull_progress_display_on_a_terminal_only(source: OstreeSource, tmp_path: Path) -> None:
    dst = client(tmp_path, source)
    status, out, err = on_pty("--repo", dst, "pull", "origin", "main")
    assert status == 0 and out.count("\n") == 1 and "objects" in out
    assert b"pull-content" in err and b"\x1b[" in err  # drawn with terminal controls
    assert b"/s" in err  # a rate


def test_pull_through_a_static_delta_progress_fd(source: OstreeSource, tmp_path: Path) -> None:
    import shutil

    from tests.store.servers import ostree

    served = tmp_path / "served"
    shutil.copytree(source.path, served, symlinks=True)
    ostree("static-delta", "generate", f"--repo={served}", "--empty", "--to", source.c2)
    ostree("summary", "-u", f"--repo={served}")
    dst = tmp_path / "dst"
    Repo.init(dst, RepoMode.BARE)
    subprocess.run([sys.executable, "-m", "layering", "--repo", str(dst), "remote", "add",
                    "--no-sign-verify", "origin", served.as_uri()], check=True, cwd=ROOT)
    proc, events = strata_fd("--repo", dst, "pull", "origin", "main")
    assert "1 static delta(s)" in proc.stdout
    assert check_events(events)[0] == "pull-delta"


def test_static_delta_generate_progress_fd(source: OstreeSource, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "served"
    shutil.copytree(source.path, repo, symlinks=True)
    proc, events = strata_fd("--repo", repo, "static-delta", "generate", "--from", source.c1,
                             "--to", source.c2)
    assert check_events(events) == ["delta-objects", "delta-write"]
    assert proc.stderr == "" and len(proc.stdout.split()) == 1


def test_bundle_create_and_apply_progress_fd(source: OstreeSource, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "src"
    shutil.copytree(source.path, repo, symlinks=True)
    bundle = tmp_path / "main.bundle"
    proc, events = strata_fd("--repo", repo, "bundle", "create", "-o", bundle, "main")
    assert check_events(events) == ["delta-objects", "bundle-write"]
    last = events[-1]  # the manifest and the delta, their bytes all but the tar's headers
    assert last["done"] == 2 and 0 < last["bytes"] < bundle.stat().st_size  # type: ignore[operator]
    dst = tmp_path / "dst"
    Repo.init(dst, RepoMode.BARE)
    proc, events = strata_fd("--repo", dst, "bundle", "apply", bundle)
    assert check_events(events) == ["bundle-read", "bundle-apply"]
    assert events[-1]["total"] and proc.stdout.startswith(f"main -> {source.c2}")


def test_import_progress_fd_counts_both_unpacking_processes(tmp_path: Path) -> None:
    require_tool("dpkg-deb")
    debs = [build_deb(tmp_path / "debs", f"pkg{i}", files={f"usr/share/p{i}/f": b"x" * i})
            for i in range(5)]
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.BARE)
    proc, events = strata_fd("--repo", repo, "import", *debs)
    assert check_events(events) == ["unpack"]
    assert events[-1]["done"] == events[-1]["total"] == 5
    assert events[-1]["bytes"] == sum(d.stat().st_size for d in debs)
    assert proc.stderr == "" and len(proc.stdout.splitlines()) == 5


def test_compose_display_on_a_terminal_stdout_stays_clean(deb_world: DebWorld) -> None:
    """Four packages: the display is live across the two-process unpack's fork."""
    status, out, err = on_pty("--repo", deb_world.repo.path, "compose", "-b", "t/progress-pty",
                              "--base", "base/stable", "--install", "hello",
                              "--source", deb_world.source)
    assert status == 0 and out == deb_world.repo.read_ref("t/progress-pty") + "\n"
    for stage in COMPOSE_STAGES:
        assert stage.encode() in err
    assert "━".encode() in err  # a bar
    assert b"4/4" in err  # both processes' packages counted


def test_compose_progress_fd_stages_in_order(deb_world: DebWorld) -> None:
    proc, events = strata_fd("--repo", deb_world.repo.path, "compose", "-b", "t/progress-fd",
                             "--base", "base/stable", "--install", "hello",
                             "--source", deb_world.source)
    assert check_events(events) == COMPOSE_STAGES
    scripts = [e for e in events if e["stage"] == "scripts"]
    assert scripts[0]["done"] == 0 and scripts[-1]["total"] >= 1  # type: ignore[operator]
    assert proc.stdout.strip() == deb_world.repo.read_ref("t/progress-fd")
    # not a terminal: stderr holds the result line only
    assert proc.stderr.count("\n") == 1 and "packages layered" in proc.stderr


def test_quiet_prints_no_progress_on_a_terminal_yet_writes_the_fd(deb_world: DebWorld) -> None:
    read, write = os.pipe()
    status, out, err = on_pty("-q", "--repo", deb_world.repo.path, "compose", "--progress-fd",
                              str(write), "-b", "t/progress-quiet", "--base", "base/stable",
                              "--install", "hello-doc", "--source", deb_world.source,
                              pass_fds=(write,))
    os.close(write)
    with os.fdopen(read, "rb") as f:
        events = [json.loads(line) for line in f.read().splitlines()]
    assert status == 0 and out == deb_world.repo.read_ref("t/progress-quiet") + "\n"
    assert err == b""
    assert check_events(events) == COMPOSE_STAGES


def test_closed_progress_fd_is_one_error_line(deb_world: DebWorld) -> None:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.close(fd)  # a number that is closed here and, unpassed, in the child
    proc = subprocess.run([sys.executable, "-m", "layering", "--repo", str(deb_world.repo.path),
                           "compose", "--progress-fd", str(fd), "-b", "t/never", "--base",
                           "base/stable", "--install", "hello"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"error: --progress-fd {fd}: bad file descriptor\n"
    assert deb_world.repo.read_ref("t/never") is None


def test_install_and_deploy_progress_fd(host: Host) -> None:  # noqa: F811
    proc, events = strata_fd("--sysroot", host.sysroot, "install", "hello")
    assert check_events(events) == [*COMPOSE_STAGES, "deploy"]
    assert "Deployed " in proc.stdout and proc.stderr == ""
    host.commit_base("2")
    proc, events = strata_fd("--sysroot", host.sysroot, "deploy", "os/stable")
    assert check_events(events) == ["deploy"] and events[-1]["total"] == 3


def test_display_starts_no_thread_so_a_fork_copies_none() -> None:
    """The two-process unpack forks while the display is live: it must own no thread."""
    import threading

    from layering.cli.progress import Display
    from store.progress import ProgressEvent

    before = threading.active_count()
    display = Display()
    try:
        display(ProgressEvent("unpack", 0, 4, 0))
        display(ProgressEvent("unpack", 2, 4, 100))
        assert display.progress is not None and threading.active_count() == before
    finally:
        display.close()
