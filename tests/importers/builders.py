"""Fixture makers: real packages with dpkg-deb/rpmbuild, hostile ones by hand."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

from tests.util import run

Entry = tuple[str, bytes] | tuple[str, bytes, int]


def build_deb(tmp: Path, name: str, version: str = "1.0", *, files: dict[str, bytes] | None = None,
              symlinks: dict[str, str] | None = None, compression: str = "xz",
              control: str = "", scripts: dict[str, str] | None = None,
              conffiles: list[str] | None = None, arch: str = "all") -> Path:
    """A .deb built by the real dpkg-deb (``--root-owner-group``)."""
    root = tmp / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: t <t@example.org>\nDescription: test {name}\n{control}")
    for path, data in (files or {}).items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if path.startswith("usr/bin/"):
            p.chmod(0o755)
    for path, target in (symlinks or {}).items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
    for sname, body in (scripts or {}).items():
        (root / "DEBIAN" / sname).write_text(body)
        (root / "DEBIAN" / sname).chmod(0o755)
    if conffiles:
        (root / "DEBIAN" / "conffiles").write_text("".join(f"/{c}\n" for c in conffiles))
    out = tmp / f"{name}_{version}_{arch}.deb"
    run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", root, out])
    return out


def ar_archive(members: list[tuple[str, bytes]], *, size_override: dict[str, int] | None = None
               ) -> bytes:
    """An ar archive as dpkg writes it; ``size_override`` lies about a member's size."""
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members:
        size = (size_override or {}).get(name, len(data))
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{size:<10}".encode() + b"`\n")
        out.write(data)
        if len(data) % 2:
            out.write(b"\n")
    return out.getvalue()


def tar_bytes(members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
              compression: str = "xz") -> bytes:
    """A tar stream of hand-made members (compression: xz, gz, bz2, or '' for none)."""
    buf = io.BytesIO()
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT) as tf:
        for m in members:
            info, data = m if isinstance(m, tuple) else (m, None)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tinfo(name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
          link: str = "", uid: int = 0, gid: int = 0, uname: str = "root",
          gname: str = "root") -> tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname = kind, mode, link
    ti.uid, ti.gid, ti.uname, ti.gname = uid, gid, uname, gname
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
        return ti, data
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = 1, 3
    return ti


def control_tar(name: str, version: str = "1.0", extra: str = "") -> bytes:
    text = (f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
            f"Maintainer: t <t@example.org>\nDescription: evil\n{extra}")
    return tar_bytes([tinfo("./", kind=tarfile.DIRTYPE, mode=0o755),
                      tinfo("./control", data=text.encode())], "xz")


def hand_deb(tmp: Path, name: str, data_members: list, *, data_name: str = "data.tar.xz",
             compression: str = "xz", control_extra: str = "", debian_binary: bytes = b"2.0\n",
             data_bytes: bytes | None = None, size_override: dict[str, int] | None = None
             ) -> Path:
    """A .deb assembled by hand, so its data.tar can hold anything."""
    data = data_bytes if data_bytes is not None else tar_bytes(data_members, compression)
    blob = ar_archive([("debian-binary", debian_binary),
                       ("control.tar.xz", control_tar(name, extra=control_extra)),
                       (data_name, data)], size_override=size_override)
    out = tmp / f"{name}_1.0_all.deb"
    out.write_bytes(blob)
    return out


def dpkg_listing(deb: Path) -> dict[str, tuple[str, str, str]]:
    """``dpkg-deb -c``: path -> (mode string, owner/group, symlink or hardlink target)."""
    out = {}
    for line in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
        perms, owner, _size, _date, _time, rest = line.split(None, 5)
        target = ""
        if " -> " in rest:
            rest, target = rest.split(" -> ", 1)
        elif " link to " in rest:
            rest, target = rest.split(" link to ", 1)
        path = rest.removeprefix("./").rstrip("/")
        out[path] = (perms, owner, target)
    return out


def build_rpm(tmp: Path, name: str, *, install: str, files: str, version: str = "1.0",
              release: str = "1", extra: str = "", payload: str = "w9.gzdio") -> Path:
    """An .rpm built by the real rpmbuild (noarch)."""
    top = tmp / f"rpmbuild-{name}"
    spec = tmp / f"{name}.spec"
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: test {name}\n"
        f"License: MIT\nBuildArch: noarch\n{extra}\n%description\ntest\n%install\n"
        f"{install}\n%files\n{files}\n")
    run(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define", f"_binary_payload {payload}",
         "--define", "_build_id_links none", spec])
    return next((top / "RPMS" / "noarch").glob(f"{name}-{version}-{release}.noarch.rpm"))


def rpm_dump(rpm: Path) -> dict[str, tuple[int, str, str, str]]:
    """``rpm -qlpv --dump``: path -> (mode, user, group, symlink target)."""
    out = {}
    for line in run(["rpm", "-qp", "--dump", rpm]).stdout.splitlines():
        f = line.split(" ")
        if len(f) < 11:
            continue
        out[f[0].lstrip("/")] = (int(f[4], 8), f[5], f[6], f[10] if f[10] != "X" else "")
    return out


def replace_rpm_payload(src: Path, dst: Path, cpio_members: list[tuple[str, int, bytes]]) -> Path:
    """Copy an rpm with its payload replaced by a gzip'd newc cpio of the given members."""
    import libarchive

    from importers.rpmheader import read_package_header

    with open(src, "rb") as f:
        _s, _h, offset = read_package_header(f, src.name)
        head = f.read(offset)
    buf = bytearray()

    def sink(data: bytes) -> int:
        buf.extend(data)
        return len(data)

    with libarchive.custom_writer(sink, "cpio_newc", filter_name="gzip") as w:
        for name, mode, data in cpio_members:
            if stat.S_ISREG(mode):
                w.add_file_from_memory(name, len(data), data, filetype=stat.S_IFREG,
                                       permission=stat.S_IMODE(mode))
            else:
                w.add_file_from_memory(name, 0, b"", filetype=stat.S_IFMT(mode),
                                       permission=stat.S_IMODE(mode))
    dst.write_bytes(head + bytes(buf))
    return dst
