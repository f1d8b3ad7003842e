"""Base images and package sources for the demo, tests and benches, made with real tools.

Part of the installed package because ``python -m layering.demo`` needs it
(``fixtures.images`` re-exports it for the tests).

- :func:`deb_base_rootfs`: a tiny Debian-like root filesystem (static busybox,
  merged /usr, a dpkg ``status`` with a few packages, a fake kernel), as a
  plain root filesystem would be committed before OSTree conversion.
- :func:`apt_repo`: a ``dists/`` apt repository made by ``apt-ftparchive``.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
from pathlib import Path

from store.run import run

BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), "")
BASE_PACKAGES = {
    "base-files": ("12.4", "all", "", ["etc/os-release-base"]),
    "libc6": ("2.36-9", "amd64", "", ["usr/lib/libc-fake.so.6"]),
    "busybox": ("1:1.35.0-4", "amd64", "libc6 (>= 2.34)", ["usr/bin/busybox"]),
    "dpkg": ("1.21.22", "amd64", "libc6", []),
}


def _status(packages: dict[str, tuple[str, str, str, list[str]]]) -> str:
    out = []
    for name, (version, arch, depends, _files) in sorted(packages.items()):
        stanza = (f"Package: {name}\nStatus: install ok installed\nPriority: required\n"
                  f"Architecture: {arch}\nVersion: {version}\n")
        if depends:
            stanza += f"Depends: {depends}\n"
        stanza += f"Maintainer: test <t@example.org>\nDescription: base {name}\n"
        out.append(stanza)
    return "\n".join(out)


def deb_base_rootfs(root: Path, *, version: str = "1") -> Path:
    """A plain root filesystem with a dpkg database (run as root)."""
    for d in ("usr/bin", "usr/sbin", "usr/lib/modules/6.1.0-test", "etc/apt/sources.list.d",
              "var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "tmp", "dev", "proc",
              "run", "root", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "usr/bin/busybox")
    for applet in ("sh", "cat", "echo", "ls", "mkdir", "rm", "cp", "mv", "ln", "touch", "grep",
                   "sed", "test", "[", "true", "false", "chmod", "id", "env", "printf", "wc"):
        os.symlink("busybox", root / "usr/bin" / applet)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        os.symlink(target, root / link)
    (root / "usr/lib/libc-fake.so.6").write_bytes(b"\x7fELF fake libc")
    (root / "usr/lib/os-release").write_text(
        f'NAME="Strata Test"\nID=stratatest\nVERSION_ID="{version}"\n')
    (root / "etc/os-release-base").write_text("base files\n")
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\ndaemon:x:1:\n")
    (root / "etc/hostname").write_text("strata-test\n")
    (root / "etc/motd").write_text(f"base motd {version}\n")
    (root / "usr/lib/modules/6.1.0-test/vmlinuz").write_bytes(b"fake kernel " + version.encode())
    (root / "usr/lib/modules/6.1.0-test/initramfs.img").write_bytes(b"fake initramfs")
    (root / "var/lib/dpkg/status").write_text(_status(BASE_PACKAGES))
    for name, (_v, _a, _d, files) in BASE_PACKAGES.items():
        listing = "/.\n" + "".join(f"/{f}\n" for f in files)
        (root / f"var/lib/dpkg/info/{name}.list").write_text(listing)
    os.chmod(root / "tmp", 0o1777 | stat.S_IFDIR)
    return root


def apt_repo(root: Path, debs: list[Path], *, suite: str = "stable",
             component: str = "main", arch: str = "amd64") -> Path:
    """A ``dists/SUITE/COMPONENT/binary-ARCH`` repository of ``debs`` (apt-ftparchive)."""
    pool = root / "pool" / component
    pool.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy(deb, pool / deb.name)
    bindir = root / "dists" / suite / component / f"binary-{arch}"
    bindir.mkdir(parents=True, exist_ok=True)
    packages = run(["apt-ftparchive", "packages", "pool"], cwd=root).stdout.decode()
    (bindir / "Packages").write_text(packages)
    (bindir / "Packages.xz").write_bytes(lzma.compress(packages.encode()))
    release = run(["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Suite={suite}",
                   "-o", f"APT::FTPArchive::Release::Codename={suite}",
                   "-o", f"APT::FTPArchive::Release::Architectures={arch}",
                   "-o", f"APT::FTPArchive::Release::Components={component}",
                   "release", f"dists/{suite}"], cwd=root).stdout.decode()
    (root / "dists" / suite / "Release").write_text(release)
    return root


def ostree_layout(root: Path) -> Path:
    """Move a plain root filesystem into OSTree's layout (usr/etc, dpkg db under /usr)."""
    (root / "usr/etc").mkdir(parents=True, exist_ok=True)
    for entry in (root / "etc").iterdir():
        shutil.move(entry, root / "usr/etc" / entry.name)
    (root / "etc").rmdir()
    (root / "usr/lib/sysimage").mkdir(parents=True, exist_ok=True)
    shutil.move(root / "var/lib/dpkg", root / "usr/lib/sysimage/dpkg")
    os.symlink("../../usr/lib/sysimage/dpkg", root / "var/lib/dpkg")
    return root


def build_deb(out_dir: Path, name: str, version: str = "1.0", *, arch: str = "all",
              files: dict[str, bytes] | None = None, symlinks: dict[str, str] | None = None,
              control: str = "", scripts: dict[str, str] | None = None,
              conffiles: list[str] | None = None, compression: str = "xz") -> Path:
    """A .deb built by the real ``dpkg-deb`` (with md5sums, as dh_md5sums writes them)."""
    import hashlib

    root = out_dir / f"{name}_{version}_{arch}.root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: strata <strata@example.org>\nDescription: test package {name}\n{control}")
    sums = []
    for path, data in sorted((files or {}).items()):
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if "/bin/" in f"/{path}" or data.startswith(b"#!"):
            p.chmod(0o755)
        if path not in (conffiles or []):
            sums.append(f"{hashlib.md5(data).hexdigest()}  {path}\n")
    for path, target in (symlinks or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path)
    if sums:
        (root / "DEBIAN/md5sums").write_text("".join(sums))
    for sname, body in (scripts or {}).items():
        (root / "DEBIAN" / sname).write_text(body)
        (root / "DEBIAN" / sname).chmod(0o755)
    if conffiles:
        (root / "DEBIAN/conffiles").write_text("".join(f"/{c}\n" for c in conffiles))
    out = out_dir / f"{name}_{version}_{arch}.deb"
    run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", root, out])
    shutil.rmtree(root)
    return out
