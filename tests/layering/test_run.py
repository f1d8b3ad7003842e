"""``strata run``: a command in a commit's or deployment's tree under bubblewrap.  The
command's status comes back; the tree (hard links to the stored objects) cannot be
written, ``/etc`` is a throwaway copy, ``/var`` and ``/tmp`` are empty, 127.0.0.1 of the
host is out of reach unless ``--network``; binds work; nothing stays behind, also when
strata is killed."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import deb_base_rootfs
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.util import ROOT, StrataRunner, require_tool, run

HANG = int(os.environ.get("STRATA_TEST_HANG", "300"))  # a bound on a loop, not a timing


@dataclass
class World:
    repo: Path
    tmp: Path


def _rootfs(root: Path) -> Path:
    """The fixture root filesystem in the OSTree layout (``usr/etc``) with a marker in
    ``var`` that the sandbox must not show."""
    deb_base_rootfs(root)
    os.rename(root / "etc", root / "usr/etc")
    for applet in ("wget", "sleep", "mount", "ln"):
        if not (root / "usr/bin" / applet).exists():
            os.symlink("busybox", root / "usr/bin" / applet)
    (root / "var/lib/marker").write_text("from the image\n")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    require_tool("bwrap", "ostree")
    if os.geteuid() != 0:
        pytest.skip("strata run is tested as root, as strata runs")
    tmp = tmp_path_factory.mktemp("run")
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    commit_directory(repo, _rootfs(tmp / "rootfs"), branch="base")
    return World(tmp / "repo", tmp)


def _strata(w: World, *args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    from tests.util import run_strata

    return run_strata("--repo", w.repo, *args, check=False, **kw)  # type: ignore[arg-type]


def _digest(path: Path) -> str:
    """Every name, mode, owner, link target and content below ``path``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(path)):
        dirnames.sort()
        for name in sorted(filenames) + dirnames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{p}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                h.update(Path(p).read_bytes())
    return h.hexdigest()


def _leftovers(w: World) -> list[str]:
    return sorted(n for n in os.listdir(w.repo / "tmp") if n not in
                  ("cache", "checkout", "checkout.lock", "checkout.state"))


def test_exit_status_is_the_commands(world: World) -> None:
    assert _strata(world, "run", "base", "--", "sh", "-c", "exit 42").returncode == 42
    ok = _strata(world, "run", "base", "--", "sh", "-c", "echo out; echo err >&2")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "out\n", "err\n")
    assert _strata(world, "run", "base", "false").returncode == 1
    assert _strata(world, "run", "base", "sh", "-c", "kill -9 $$").returncode == 128 + 9
    piped = _strata(world, "run", "base", "sh", input="echo from stdin; exit 5")
    assert (piped.returncode, piped.stdout) == (5, "from stdin\n")
    assert _leftovers(world) == []


def test_tree_is_read_only_and_objects_stay_intact(world: World) -> None:
    _strata(world, "run", "base", "true")  # the kept checkout now holds base
    objects, kept = _digest(world.repo / "objects"), _digest(world.repo / "tmp/checkout")
    assert (world.repo / "tmp/checkout/usr/lib/os-release").is_file()
    script = ("echo pwned >> /usr/lib/os-release; echo rc1=$?; touch /usr/new; echo rc2=$?; "
              "touch /new; echo rc3=$?; mount -o remount,rw /usr; echo rc4=$?; "
              "echo changed > /etc/motd; echo rc5=$?; cat /etc/motd; "
              "ln /usr/lib/os-release /etc/hl; echo rc6=$?; rm /etc/hostname; echo rc7=$?")
    ran = _strata(world, "run", "base", "--", "sh", "-c", script)
    assert ran.returncode == 0, ran.stderr
    out = dict(line.split("=") for line in ran.stdout.split() if "=" in line)
    assert out["rc1"] != "0" and out["rc2"] != "0" and out["rc3"] != "0" and out["rc4"] != "0"
    assert out["rc5"] == "0" and "changed" in ran.stdout and out["rc7"] == "0"
    assert out["rc6"] != "0"  # no hard link from the writable /etc to a stored object
    assert _digest(world.repo / "objects") == objects
    assert _digest(world.repo / "tmp/checkout") == kept
    assert _strata(world, "run", "base", "cat", "/etc/motd").stdout == "base motd 1\n"
    assert _strata(world, "run", "base", "cat", "/etc/hostname").stdout == "strata-test\n"
    run(["ostree", "fsck", f"--repo={world.repo}"])
    assert _leftovers(world) == []


def test_var_tmp_run_are_empty_and_etc_is_the_images(world: World) -> None:
    ran = _strata(world, "run", "base", "--", "sh", "-c",
                  "ls -A /var /tmp /run; cat /etc/os-release-base; id -u")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["/run:", "/tmp:", "/var:", "base", "files", "0"]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/x"
    httpd.shutdown()
    httpd.server_close()


def test_no_network_unless_asked(world: World, server: str) -> None:
    cut = _strata(world, "run", "base", "--", "wget", "-q", "-T", "5", "-O", "-", server)
    assert cut.returncode != 0 and "hello" not in cut.stdout
    shared = _strata(world, "run", "--network", "base", "--", "wget", "-q", "-O", "-", server)
    assert shared.returncode == 0 and shared.stdout == "hello from the host\n", shared.stderr


def test_bind_mounts_a_host_directory(world: World, tmp_path: Path) -> None:
    (tmp_path / "in").write_text("from the host\n")
    ran = _strata(world, "run", "--bind", f"{tmp_path}:/mnt/host", "--bind", f"{tmp_path}:/tmp/x",
                  "base", "--", "sh", "-c", "cat /mnt/host/in && echo back > /tmp/x/out")
    assert ran.returncode == 0 and ran.stdout == "from the host\n", ran.stderr
    assert (tmp_path / "out").read_text() == "back\n"
    bad = _strata(world, "run", "--bind", "/no/such/dir:/mnt", "base", "true")
    assert bad.returncode == 1 and bad.stderr == "error: bind source /no/such/dir does not exist\n"


def test_missing_command_and_ref_are_one_error_line(world: World) -> None:
    missing = _strata(world, "run", "base", "--", "no-such-command", "arg")
    assert missing.returncode == 127
    assert missing.stderr == "error: command no-such-command not found in the tree of base\n"
    assert _strata(world, "run", "base", "/usr/lib").returncode == 127  # a directory
    assert _strata(world, "run", "base", "/bin/sh", "-c", "true").returncode == 0  # via /bin
    bad = _strata(world, "run", "no-such-ref", "true")
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("error: ") and "no-such-ref" in bad.stderr
    assert _leftovers(world) == []


def _sandboxes(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``, other than pytest and strata."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmd and b"layering" not in cmd and b"bwrap" not in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_or_killed_run_leaves_nothing(world: World, sig: signal.Signals) -> None:
    marker = f"{4242 + int(sig)}.{os.getpid()}"  # this session's own: not a stale run's
    proc = subprocess.Popen([sys.executable, "-m", "layering", "--repo", str(world.repo), "run",
                             "base", "--", "sleep", marker], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(HANG * 10):
        if _sandboxes(marker):
            break
        time.sleep(0.1)
    assert _sandboxes(marker), "the command never started"
    assert _leftovers(world)  # the run's scratch directory while it runs
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=HANG)
    for _ in range(HANG * 10):
        if not _sandboxes(marker):
            break
        time.sleep(0.1)
    assert not _sandboxes(marker), "the sandbox outlived strata"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and err.decode().strip() == "error: interrupted"
    else:
        Repo.open(world.repo)  # the next open removes what a killed run left
    assert _leftovers(world) == []


def test_run_on_a_deployment(world: World, strata: StrataRunner) -> None:
    tmp = world.tmp / "sysroot-test"
    s = tmp / "sysroot"
    try:
        strata("--sysroot", s, "os-init", "testos")
        commit_directory(Repo.open(s / "ostree/repo"), _rootfs(tmp / "rootfs"), branch="os/x")
        strata("--sysroot", s, "deploy", "--stateroot", "testos", "os/x")
        [deploy] = (s / "ostree/deploy/testos/deploy").glob("*.0")
        (deploy / "etc/motd").write_text("edited on the host\n")  # the merged /etc counts
        before = _digest(deploy)
        for which in ("deployment:0", "deployment:default"):
            ran = strata("--sysroot", s, "run", which, "--", "sh", "-c",
                         "cat /etc/motd; echo x > /etc/motd; echo x > /usr/lib/os-release; "
                         "ls -A /var", check=False)
            assert ran.returncode == 0 and ran.stdout == "edited on the host\n", ran.stderr
            assert "Read-only file system" in ran.stderr
        assert _digest(deploy) == before
        bad = strata("--sysroot", s, "run", "deployment:7", "true", check=False)
        assert bad.returncode == 1 and bad.stderr.startswith("error: no deployment 7 in ")
        assert sorted(os.listdir(s / "ostree/repo/tmp")) in (
            ["cache"], ["cache", "checkout", "checkout.lock", "checkout.state"])
    finally:
        subprocess.run(["chattr", "-R", "-i", str(tmp)], capture_output=True)
        subprocess.run(["rm", "-rf", str(tmp)])
