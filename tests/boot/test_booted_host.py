"""strata run by a person on a booted host: four boots of one disk in QEMU.

The host publishes a base (the bootable Debian tree with strata itself composed
in) over HTTP on 127.0.0.1, which the guest reaches through QEMU's user
networking; the sysroot pulls and deploys it, then the disk boots four times and
each boot runs one step inside the guest:

1. the base is booted: ``status`` marks it; the admin writes to ``/var``;
   ``strata install strata-svc`` (a service running as the system user its
   postinst creates) stages the new deployment, as on any booted host; the
   admin edits ``/etc`` only then, before the reboot: the finalization at
   shutdown (``strata-finalize-staged.service``) keeps the edit;
2. the layered deployment is booted: the service ran as its user, the user
   exists, dpkg lists the package, the edits survived; the host has published a
   new base meanwhile: ``strata upgrade``;
3. the new base is booted with the package and the edits; ``strata rollback``;
4. the previous deployment is booted again.

Every step checks that the booted deployment's files (metadata of every entry,
content of ``/etc``) are the same before and after strata ran.  The sysroot is
configured ``sysroot.readonly=true``: ostree-prepare-root mounts ``/sysroot``
read-only, strata writes it through its own mount namespace, and ``/sysroot``
stays read-only for everyone else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.images import apt_repo, build_deb
from tests.boot.guest import service_deb, strata_deb
from tests.boot.vm import GUEST_HOST, boot_disk, bootable_rootfs, make_disk
from tests.store.servers import http_server
from tests.util import require_tool, run_strata

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(2400)]

STATEROOT = "debian"
KARGS = ("--karg", "root=/dev/vda", "--karg", "rw", "--karg", "console=ttyS0")

PRELUDE = r"""
T=/var/lib/strata-test
B=$(readlink -f "$(sed 's/.*ostree=\([^ ]*\).*/\1/' /proc/cmdline)")  # before boot links move
echo "booted-dir ${B##*/}"
digest() {
  b=$B
  { find "$b" -xdev -printf '%P %y %m %U %G %s %l\n' | sort
    find "$b/etc" -xdev -type f -exec sha256sum {} + | sort; } | sha256sum | cut -c1-16
}
checks() {
  echo "svc-active $(systemctl is-active strata-svc.service)"
  echo "svc-whoami $(cat /run/strata-svc/whoami 2>&1)"
  echo "user $(getent passwd strata-svc | cut -d: -f1,7)"
  echo "var-owner $(stat -c %U /var/lib/strata-svc 2>&1)"
  echo "dpkg $(dpkg-query -W -f '${Package} ${Version}' strata-svc 2>&1)"
  echo "edit $(cat /etc/strata-admin-edit 2>&1)"
  echo "vardata $(cat $T/userdata 2>&1)"
}
echo "base $(cat /usr/share/strata-test/base-version)"
echo "booted-json $(strata --json status | python3 -c 'import json,sys; \
print([d["booted"] for d in json.load(sys.stdin)["deployments"]])')"
strata status | grep -q '^●' && echo "status-mark yes"
sysroot_ro() { python3 -c 'import os; print("ro" if os.statvfs("/sysroot").f_flag & 1 else "rw")'; }
echo "sysroot-ro $(sysroot_ro)"
for i in $(seq 60); do python3 -c 'import socket; socket.create_connection(("GUEST_HOST", PORT), 1)' \
  2>/dev/null && break; sleep 1; done
"""

STEPS = {
    1: r"""
echo data > $T/userdata
before=$(digest)
strata install strata-svc > $T/out 2>&1; rc=$?; tail -5 $T/out; echo "op-rc $rc"
echo "booted-same $([ "$before" = "$(digest)" ] && echo yes || echo no)"
echo "staged-json $(strata --json status | python3 -c 'import json,sys; \
print([d["staged"] for d in json.load(sys.stdin)["deployments"]])')"
echo "sysroot-ro-after $(sysroot_ro)"
echo admin > /etc/strata-admin-edit
""",
    2: r"""
checks
before=$(digest)
strata upgrade > $T/out 2>&1; rc=$?; tail -5 $T/out; echo "op-rc $rc"
echo "booted-same $([ "$before" = "$(digest)" ] && echo yes || echo no)"
""",
    3: r"""
checks
before=$(digest)
strata rollback > $T/out 2>&1; rc=$?; tail -5 $T/out; echo "op-rc $rc"
echo "booted-same $([ "$before" = "$(digest)" ] && echo yes || echo no)"
""",
    4: r"""
checks
""",
}


def _probe_script(port: int) -> str:
    steps = "".join(f"if [ $n = {k} ]; then\n{v}\nfi\n" for k, v in STEPS.items())
    return ("set -u\nT=/var/lib/strata-test\n"
            "n=$(( $(cat $T/count 2>/dev/null || echo 0) + 1 )); echo $n > $T/count\n"
            f"echo \"step $n\"\n{PRELUDE}\n{steps}").replace("GUEST_HOST", GUEST_HOST) \
        .replace("PORT", str(port))


def _lines(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, value.strip())
    return out


def _publish(repo: Path, plain: str, version: int, debs: list[Path], work: Path) -> str:
    marker = build_deb(work, "base-marker", f"{version}.0",
                       files={"usr/share/strata-test/base-version": f"{version}\n".encode()})
    local = [a for d in [*debs, marker] for a in ("--install-local", str(d))]
    out = run_strata("--repo", repo, "compose", "-b", "debian/bookworm", "--base", plain,
                     *local, "--offline").stdout.split()[-1]
    run_strata("--repo", repo, "summary", "--update")
    return out


def test_strata_on_a_booted_host(tmp_path: Path) -> None:
    require_tool("mmdebstrap", "qemu-system-x86_64", "mkfs.ext4")
    rootfs = bootable_rootfs()
    srv = tmp_path / "srv"
    apt_repo(srv / "apt", [service_deb(tmp_path / "svc")])
    sdeb = strata_deb(tmp_path / "strata-deb")
    repo = srv / "repo"
    run_strata("--repo", repo, "init", "--mode", "archive")
    plain = run_strata("--repo", repo, "commit", "-b", "plain/bookworm", "-s", "bootable",
                       rootfs).stdout.strip()
    v1 = _publish(repo, plain, 1, [sdeb], tmp_path / "m1")

    s = tmp_path / "sysroot"
    with http_server(srv) as served:
        run_strata("--sysroot", s, "os-init", STATEROOT)
        r = s / "ostree/repo"
        run_strata("--repo", r, "remote", "add", "--no-sign-verify", "origin", f"{served.url}/repo")
        run_strata("--repo", r, "pull", "origin", "debian/bookworm")
        run_strata("--sysroot", s, "deploy", "--stateroot", STATEROOT, *KARGS,
                   "origin:debian/bookworm")
        run_strata("--repo", r, "remote", "delete", "origin")
        guest_url = f"http://{GUEST_HOST}:{served.port}"
        run_strata("--repo", r, "remote", "add", "--no-sign-verify", "origin", f"{guest_url}/repo")
        (dep,) = (s / "ostree/deploy" / STATEROOT / "deploy").glob(f"{v1}.0")
        (dep / "etc/apt/sources.list").write_text(f"deb [trusted=yes] {guest_url}/apt stable main\n")
        with open(r / "config", "a") as f:  # ostree-prepare-root mounts /sysroot read-only
            f.write("[sysroot]\nreadonly=true\n")
        t = s / "ostree/deploy" / STATEROOT / "var/lib/strata-test"
        t.mkdir(parents=True)
        (t / "probe.sh").write_text(_probe_script(served.port))
        image = tmp_path / "disk.img"
        make_disk(s, image, size="4G")
        subprocess.run(["chattr", "-R", "-i", str(s)], capture_output=True)
        shutil.rmtree(s)

        results, wrong = {}, []
        for step in (1, 2, 3, 4):
            if step == 2:
                _publish(repo, plain, 2, [sdeb], tmp_path / "m2")
            res = boot_disk(image, tmp_path, name=f"step{step}", network=True)
            got = _lines(res.probe)
            results[step] = (round(res.seconds), res.accel)
            want = {"step": str(step), "base": {1: "1", 2: "1", 3: "2", 4: "1"}[step],
                    "status-mark": "yes", "sysroot-ro": "ro"}
            if step == 1:
                want.update({"staged-json": "[True, False]", "sysroot-ro-after": "ro"})
            if step > 1:
                want.update({"svc-active": "active", "svc-whoami": "strata-svc",
                             "user": "strata-svc:/usr/sbin/nologin", "var-owner": "strata-svc",
                             "dpkg": "strata-svc 1.0", "edit": "admin", "vardata": "data"})
            if step < 4:
                want.update({"op-rc": "0", "booted-same": "yes"})
            wrong += [f"step {step}: {k} is {got.get(k)!r}, not {v!r}" for k, v in want.items()
                      if got.get(k) != v]
            if got.get("booted-json", "").count("True") != 1:
                wrong.append(f"step {step}: booted flags {got.get('booted-json')}")
            if got.get("op-rc", "0") != "0":
                break
    assert not wrong, "\n".join(wrong) + f"\nlogs in {tmp_path}"
    print("boots (seconds, accelerator):", json.dumps(results))
