"""Booting strata's deployments for real: a cached bootable Debian 12 tree, a disk
image made from a sysroot, and QEMU driven over the serial console.

- :func:`bootable_rootfs` builds (once, cached under the test cache and keyed by
  its package list) an mmdebstrap tree with the cloud kernel, systemd, ostree's
  dracut module and an initramfs made by dracut, plus a probe service: at the end
  of every boot it runs ``/var/lib/strata-test/probe.sh`` if the host left one in
  the stateroot, prints its output between markers and powers off.
- :func:`boot` copies a sysroot into an ext4 image (``mkfs.ext4 -d``) and boots
  the default boot entry's kernel, initramfs and options directly; KVM is tried
  once per session and TCG used when it fails (these machines' KVM does).
  A boot has a timeout, stops early on known failure patterns, is retried once
  (about one boot in nine loses ``/dev/vda`` in the initramfs), and its console
  log is kept beside the image.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.layering.realworld import cache_root, host_mirror
from tests.util import run

CACHE = cache_root() / "boot"
PACKAGES = ("systemd", "systemd-sysv", "udev", "linux-image-cloud-amd64", "dracut", "ostree",
            "ostree-boot", "python3", "bubblewrap", "e2fsprogs", "libarchive13", "libxml2")
DRIVERS = "virtio_pci virtio_blk ext4 crc32c_generic"
BEGIN, END = "STRATA-PROBE-BEGIN", "STRATA-PROBE-END"
FAILURES = ("Kernel panic", "emergency mode", "Cannot open access to console",
            "Failed to mount /sysroot", "KVM internal error")
BOOT_TIMEOUT = float(os.environ.get("STRATA_BOOT_TIMEOUT", "300"))

PROBE_UNIT = """[Unit]
Description=strata boot test probe
After=multi-user.target
ConditionPathExists=/var/lib/strata-test/probe.sh

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo STRATA-PROBE-BEGIN; sh /var/lib/strata-test/probe.sh 2>&1; \
echo "STRATA-PROBE-END rc=$?"'
ExecStartPost=/bin/systemctl --no-block poweroff
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
"""


NETWORK = """[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
"""
GUEST_HOST = "10.0.2.2"  # QEMU user networking: the host's loopback, seen from the guest


SUITES = ("bookworm",)
UPDATED_SUITES = ("bookworm", "bookworm-security")  # a newer kernel than bookworm's own


def _key(packages: tuple[str, ...], suites: tuple[str, ...] = SUITES) -> str:
    text = "\n".join(packages) + DRIVERS + "v1"
    if suites != SUITES:
        text += "\n".join(suites)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bootable_rootfs(packages: tuple[str, ...] = PACKAGES,
                    suites: tuple[str, ...] = SUITES) -> Path:
    """A cached bootable root filesystem (plain layout, as mmdebstrap makes it).

    Built with the machine's own apt mirrors of ``suites`` (main); ``usr/lib/modules/KVER/
    {vmlinuz,initramfs.img}`` are where strata's deploy looks for the kernel.
    """
    final = CACHE / f"bootable-{_key(packages, suites)}"
    if (final / "usr/lib/os-release").exists():
        return _finish(final)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    hooks = [
        'for k in "$1"/boot/vmlinuz-*; do v=${k##*/vmlinuz-}; '
        'cp "$k" "$1/usr/lib/modules/$v/vmlinuz"; '
        f'chroot "$1" dracut --force --no-hostonly --add ostree --add-drivers "{DRIVERS}" '
        '--kver "$v" "/usr/lib/modules/$v/initramfs.img"; done',
        'systemctl --root="$1" mask serial-getty@ttyS0.service',
        'rm -f "$1"/boot/vmlinuz-* "$1"/boot/initrd.img-* "$1"/vmlinuz* "$1"/initrd.img*',
    ]
    argv: list[str | os.PathLike[str]] = [
        "mmdebstrap", "--quiet", "--variant=minbase", "--mode=root",
        f"--include={','.join(packages)}"]
    for h in hooks:
        argv.append(f"--customize-hook={h}")
    sources = [f"deb {host_mirror(suite)} {suite} main" for suite in suites]
    run([*argv, "bookworm", tmp, *sources], timeout=1800)
    for dev in (tmp / "dev").iterdir():  # ostree refuses device nodes; the kernel mounts /dev
        if dev.is_dir() and not dev.is_symlink():
            shutil.rmtree(dev)
        else:
            dev.unlink()
    os.rename(tmp, final)
    return _finish(final)


def _finish(tree: Path) -> Path:
    """The parts of the tree that are cheap to (re)make on every use: the probe service
    and what an OSTree image carries at its root, ``/sysroot`` (ostree-prepare-root
    moves the physical root there) and ``/ostree -> sysroot/ostree``."""
    unit = tree / "usr/lib/systemd/system/strata-probe.service"
    unit.write_text(PROBE_UNIT)
    wants = tree / "etc/systemd/system/multi-user.target.wants" / unit.name
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.is_symlink():
        wants.symlink_to(f"/usr/lib/systemd/system/{unit.name}")
    net = tree / "etc/systemd/network/80-strata-test.network"
    net.parent.mkdir(parents=True, exist_ok=True)
    net.write_text(NETWORK)
    for target, name in (("multi-user.target.wants", "systemd-networkd.service"),
                         ("sockets.target.wants", "systemd-networkd.socket")):
        link = tree / "etc/systemd/system" / target / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(f"/lib/systemd/system/{name}")
    sources = tree / "etc/apt/sources.list"
    if sources.exists():
        sources.write_text("")  # the tests add their own sources; the image reads no mirror
    (tree / "sysroot").mkdir(exist_ok=True)
    if not (tree / "ostree").is_symlink():
        (tree / "ostree").symlink_to("sysroot/ostree")
    return tree


def newer_kernel_rootfs(old_kver: str) -> Path:
    """A cached bootable tree whose kernel version is not ``old_kver``: the same packages with
    the security suite's updates (a kernel update as a host gets it), else, when that
    kernel is bookworm's own, Debian 12's other kernel series (6.12)."""
    tree = bootable_rootfs(PACKAGES, UPDATED_SUITES)
    if kernel_version(tree) != old_kver:
        return tree
    other = tuple("linux-image-6.12-cloud-amd64" if p == "linux-image-cloud-amd64" else p
                  for p in PACKAGES)
    return bootable_rootfs(other, UPDATED_SUITES)


def kernel_version(rootfs: Path) -> str:
    """The one kernel version in a tree built by :func:`bootable_rootfs`."""
    (kver,) = [p.name for p in (rootfs / "usr/lib/modules").iterdir()
               if (p / "vmlinuz").exists()]
    return kver


@dataclass(frozen=True)
class BootEntry:
    """What QEMU needs from a Boot Loader Spec entry."""

    linux: Path
    initrd: Path
    options: str


def default_entry(sysroot: Path) -> BootEntry:
    """The default deployment's boot entry: the highest ``version`` in the current loader."""
    entries = sorted((sysroot / "boot/loader/entries").glob("*.conf"))
    best: dict[str, str] = {}
    for e in entries:
        fields = dict(line.split(" ", 1) for line in e.read_text().splitlines() if " " in line)
        if not best or int(fields["version"]) > int(best["version"]):
            best = fields
    boot = sysroot / "boot"
    return BootEntry(boot / best["linux"].lstrip("/"), boot / best["initrd"].lstrip("/"),
                     best["options"])


def write_probe(sysroot: Path, stateroot: str, script: str) -> None:
    """Leave ``script`` where the probe service runs it at the end of the next boot."""
    d = sysroot / "ostree/deploy" / stateroot / "var/lib/strata-test"
    d.mkdir(parents=True, exist_ok=True)
    (d / "probe.sh").write_text(script)


def make_disk(sysroot: Path, image: Path, size: str = "3G") -> None:
    """An ext4 image whose root is ``sysroot`` (immutable bits are not copied)."""
    image.unlink(missing_ok=True)
    run(["truncate", "-s", size, image])
    run(["mkfs.ext4", "-q", "-F", "-d", sysroot, image], timeout=600)


def read_disk_file(image: Path, path: str) -> str | None:
    """A file of the guest's disk after it shut down, through debugfs (no mount)."""
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True)
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 and proc.stdout else None


_ACCEL: list[str] = []


def accelerator(kernel: Path) -> list[str]:
    """``-accel kvm`` when a short boot of the kernel works under KVM, else TCG."""
    if not _ACCEL:
        _ACCEL.extend(_probe_kvm(kernel))
    return list(_ACCEL)


TCG = ["-accel", "tcg,thread=multi", "-cpu", "qemu64"]


def _probe_kvm(kernel: Path) -> list[str]:
    if not os.path.exists("/dev/kvm"):
        return TCG
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256M",
            "-nographic", "-no-reboot", "-kernel", str(kernel), "-append",
            "console=ttyS0 panic=-1 root=/dev/nonexistent", "-nic", "none"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=60)
        out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return TCG
    ok = "Linux version" in out and "KVM internal error" not in out
    return ["-accel", "kvm", "-cpu", "host"] if ok else TCG


@dataclass(frozen=True)
class BootResult:
    """One boot: the probe's output (between the markers), its exit status, the log, wall
    seconds, the accelerator and the CPU seconds QEMU used (user + system)."""

    probe: str
    rc: int
    log: Path
    seconds: float
    accel: str
    cpu: float = 0.0


class BootFailed(AssertionError):
    """The guest did not reach the probe; the message ends with the console tail."""


def boot(sysroot: Path, workdir: Path, *, name: str = "boot", retries: int = 1) -> BootResult:
    """Boot the sysroot's default entry once (retrying a failed boot ``retries`` times)."""
    image = workdir / f"{name}.img"
    make_disk(sysroot, image)
    entry = default_entry(sysroot)
    last: BootFailed | None = None
    for attempt in range(retries + 1):
        log = workdir / f"{name}-{attempt}.console.log"
        try:
            return _boot_once(image, entry, log)
        except BootFailed as e:
            last = e
            make_disk(sysroot, image)  # the failed boot may have written to the disk
    assert last is not None
    raise last


def boot_split(sysroot: Path, workdir: Path, *, name: str) -> BootResult:
    """Boot the sysroot's default entry with ``boot/`` on a second disk (``/dev/vdb``, the
    guest's fstab must mount it) and the rest on the first; retried once."""
    entry = default_entry(sysroot)
    root, bootfs = workdir / f"{name}.img", workdir / f"{name}-boot.img"
    aside = sysroot.with_name(f"{sysroot.name}-boot-aside")
    last: BootFailed | None = None
    for attempt in range(2):
        os.rename(sysroot / "boot", aside)
        try:
            (sysroot / "boot").mkdir()
            make_disk(sysroot, root)
            (sysroot / "boot").rmdir()
        finally:
            os.rename(aside, sysroot / "boot")
        make_disk(sysroot / "boot", bootfs, size="512M")
        try:
            return _boot_once(root, entry, workdir / f"{name}-{attempt}.console.log",
                              extra=(bootfs,))
        except BootFailed as e:
            last = e
    assert last is not None
    raise last


def boot_disk(image: Path, workdir: Path, *, name: str, network: bool = False) -> BootResult:
    """Boot a disk image as it is (the guest's own changes kept) from its default entry.

    A boot that fails before the probe runs is retried once: it wrote nothing that
    matters (the probe counts its steps in ``/var``, only when it runs)."""
    last: BootFailed | None = None
    for attempt in range(2):
        entry = _entry_of_image(image, workdir / f"{name}-boot")
        try:
            return _boot_once(image, entry, workdir / f"{name}-{attempt}.console.log",
                              network=network)
        except BootFailed as e:
            if STEP_STARTED in (e.args[0] if e.args else ""):
                raise
            last = e
    assert last is not None
    raise last


STEP_STARTED = "probe started"


def _entry_of_image(image: Path, dest: Path) -> BootEntry:
    """Copy the image's ``/boot`` out (read-only loop mount) and read its default entry."""
    mnt = dest.with_name(dest.name + "-mnt")
    mnt.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    run(["mount", "-o", "loop,ro", image, mnt])
    try:
        shutil.copytree(mnt / "boot", dest / "boot", symlinks=True)
    finally:
        run(["umount", mnt])
    return default_entry(dest)


def _boot_once(image: Path, entry: BootEntry, log: Path, *, network: bool = False,
               extra: tuple[Path, ...] = ()) -> BootResult:
    accel = accelerator(entry.linux)
    nic = ["-nic", "user,model=virtio-net-pci"] if network else ["-nic", "none"]
    drives = [a for d in (image, *extra) for a in ("-drive", f"file={d},format=raw,if=virtio")]
    argv = ["qemu-system-x86_64", *accel, "-m", "1G", "-smp", "2", "-nographic",
            "-no-reboot", "-kernel", str(entry.linux), "-initrd", str(entry.initrd),
            "-append", entry.options, *drives, *nic]
    start, used = time.monotonic(), _children_cpu()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            failure = _watch(proc, log, start)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    cpu = _children_cpu() - used
    text = log.read_text(errors="replace")
    m = re.search(rf"{BEGIN}\r?\n(.*?){END} rc=(\d+)", text, re.S)
    if failure or m is None:
        tail = "\n".join(text.splitlines()[-25:])
        started = f"; {STEP_STARTED}" if BEGIN in text else ""
        raise BootFailed(f"boot failed ({failure or 'no probe output'}{started}); "
                         f"log {log}:\n{tail}")
    probe = re.sub(r"\r", "", m.group(1))
    probe = "\n".join(line for line in probe.splitlines() if not _is_kernel_noise(line))
    return BootResult(probe, int(m.group(2)), log, time.monotonic() - start, accel[1], cpu)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _is_kernel_noise(line: str) -> bool:
    """A kernel message interleaved with the probe's output on the serial console."""
    return bool(re.match(r"\s*\[\s*\d+\.\d+\] (?!\S+\[\d+\]: )", line))


def _watch(proc: subprocess.Popen[bytes], log: Path, start: float) -> str:
    """Wait for QEMU to exit; a known failure pattern or the timeout ends it early."""
    while proc.poll() is None:
        time.sleep(1)
        if time.monotonic() - start > BOOT_TIMEOUT:
            return f"timeout after {BOOT_TIMEOUT:.0f} s"
        text = log.read_text(errors="replace")
        if END in text:
            continue  # the probe is done; QEMU exits when the guest powers off
        for pattern in FAILURES:
            if pattern in text:
                return pattern.strip()
    return ""
