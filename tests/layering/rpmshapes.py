"""Small rpm sets with dependency loops, as spec lines: built by ``rpmbuild`` for the rpm
oracle (tests/layering/test_rpmorder_oracle.py) and read into PackageMeta records for the
unit tests (tests/layering/test_rpmorder_cycles.py), with the install order the real
``rpm -i`` (4.18.0) gave for each.

Each package owns ``/usr/share/NAME/f``; a ``File: /path`` line adds a file it owns.
Its ``%post`` is a Lua script (run inside rpm, no shell needed in the root) appending its
name to ``/order.log``: the order rpm ran the packages in.
"""

from __future__ import annotations

import random
import re

from fixtures.rpmimages import Spec, spec
from importers.model import DepKind, FileEntry, FileKind, PackageMeta, PackageType, Relation

Shape = dict[str, tuple[str, ...]]

SHAPES: dict[str, Shape] = {
    "two-cycle": {"a": ("Requires: b",), "b": ("Requires: a",)},
    "three-cycle": {"a": ("Requires: b",), "b": ("Requires: c",), "c": ("Requires: a",),
                    "d": ()},
    # a's %pre needs c: rpm keeps c before a, whatever the names say
    "pre-in-cycle": {"a": ("Requires(pre): c",), "b": ("Requires: a",), "c": ("Requires: b",)},
    # Requires(post) is kept like (pre); (postun), (preun) are plain relations on install,
    # (posttrans) none
    "post-in-cycle": {"a": ("Requires: b", "Requires(preun): d"),
                      "b": ("Requires(postun): c", "Requires(posttrans): a"),
                      "c": ("Requires(post): a", "Requires: b"), "d": ("Requires: c",)},
    # the loop {b, d} requires the loop {a, c} through d -> a
    "joined-cycles": {"a": ("Requires: c",), "b": ("Requires: d",), "c": ("Requires: a",),
                      "d": ("Requires: b", "Requires: a")},
    "cycle-and-independents": {"a": (), "m": ("Requires: n",), "n": ("Requires: m z",),
                               "p": ("Requires: m",), "q": ("Requires: p",), "z": ()},
    # glibc/glibc-common/bash (a file dependency closes it), filesystem/setup with a %pre,
    # systemd/systemd-libs through a rich dependency, a Recommends and a Supplements
    "distro-like": {
        "bash": ("Requires: glibc filesystem", "File: /bin/sh"),
        "filesystem": ("Requires(pre): setup",),
        "glibc": ("Requires: glibc-common filesystem", "Requires(post): /bin/sh"),
        "glibc-common": ("Requires: glibc /bin/sh",),
        "setup": ("Requires: filesystem",),
        "systemd": ("Requires: systemd-libs", "Requires(post): /bin/sh",
                    "Recommends: zz-tools"),
        "systemd-libs": ("Requires: (systemd if bash) glibc",),
        "zz-tools": ("Requires: bash", "Supplements: systemd-libs"),
    },
}

# the order rpm -i (4.18.0) ran each set's %post in, packages given by file name
RPM_ORDERS: dict[str, list[str]] = {
    "two-cycle": ["b", "a"],
    "three-cycle": ["b", "a", "c", "d"],
    "pre-in-cycle": ["b", "c", "a"],
    "post-in-cycle": ["d", "b", "a", "c"],
    "joined-cycles": ["c", "a", "b", "d"],
    "cycle-and-independents": ["z", "n", "m", "p", "q", "a"],
    "distro-like": ["setup", "filesystem", "glibc-common", "bash", "glibc", "zz-tools",
                    "systemd", "systemd-libs"],
}

_QUALIFIERS = {"pre": 1 << 9, "post": 1 << 10, "preun": 1 << 11, "postun": 1 << 12,
               "pretrans": 1 << 7, "posttrans": 1 << 5}
_KINDS = {"Requires": DepKind.DEPENDS, "Recommends": DepKind.RECOMMENDS,
          "Supplements": DepKind.SUPPLEMENTS, "Provides": DepKind.PROVIDES}
_LINE = re.compile(r"(\w+)(?:\((\w+)\))?:\s*(.*)")


def _terms(text: str) -> list[str]:
    """Space-separated names, a parenthesised rich dependency kept whole."""
    return re.findall(r"\([^()]*\)|\S+", text)


def files_of(name: str, lines: tuple[str, ...]) -> list[str]:
    """The paths a package of a shape owns."""
    return [f"/usr/share/{name}/f", *(ln.split(":", 1)[1].strip() for ln in lines
                                      if ln.startswith("File:"))]


def spec_of(name: str, lines: tuple[str, ...]) -> Spec:
    """The noarch package ``name`` with its spec lines and a %post logging its name."""
    paths = files_of(name, lines)
    install = "".join(f"mkdir -p %{{buildroot}}{p.rsplit('/', 1)[0]}\n"
                      f"echo {name} > %{{buildroot}}{p}\n" for p in paths)
    post = ("%post -p <lua>\nlocal f = io.open(\"/order.log\", \"a\")\n"
            f"f:write(\"{name}\\n\")\nf:close()\n")
    extra = "".join(ln + "\n" for ln in lines if not ln.startswith("File:"))
    return spec(name, extra=extra, scripts=post, install=install, files="\n".join(paths))


def meta_of(name: str, lines: tuple[str, ...]) -> PackageMeta:
    """The record rpm's header gives for :func:`spec_of` (dependency names and flags, in
    header order)."""
    deps: dict[DepKind, list[tuple[Relation, ...]]] = {}
    for ln in lines:
        m = _LINE.fullmatch(ln)
        if m is None or m.group(1) not in _KINDS:
            continue
        flags = _QUALIFIERS[m.group(2)] if m.group(2) else 0
        deps.setdefault(_KINDS[m.group(1)], []).extend(
            (Relation(t, flags=flags),) for t in _terms(m.group(3)))
    files = tuple(FileEntry(p.lstrip("/"), FileKind.FILE, 0o100644) for p in files_of(name, lines))
    # rpmbuild keeps each tag's dependencies sorted by name (and flags), duplicates merged
    sorted_deps = {k: tuple(sorted(set(v), key=lambda g: (g[0].name.encode(), g[0].flags)))
                   for k, v in deps.items()}
    return PackageMeta(PackageType.RPM, name, "1.0", "noarch", release="1",
                       deps=sorted_deps, files=files)


def metas(shape: Shape) -> list[PackageMeta]:
    """A shape's records in rpm's transaction order (by file name, as ``rpm -i *.rpm``)."""
    return [meta_of(n, shape[n]) for n in sorted(shape)]


_RANDOM_KINDS = ("Requires",) * 6 + ("Requires(pre)", "Requires(post)", "Requires(postun)",
                                     "Recommends", "Supplements")


def random_shape(seed: int) -> Shape:
    """A seeded random set of 3-8 packages: Requires of every strength, Recommends,
    Supplements, a virtual Provides some share and files others require."""
    r = random.Random(seed)
    names = [f"p{i}{r.choice('abcxyz')}" for i in range(r.randint(3, 8))]
    r.shuffle(names)
    lines: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        if r.random() < 0.2:
            lines[n].append("Provides: virt")
        if r.random() < 0.15:
            lines[n].append(f"File: /opt/shared/{n}")
    for _ in range(r.randint(len(names) - 1, 2 * len(names) + 2)):
        a, b = r.sample(names, 2)
        kind, target = r.choice(_RANDOM_KINDS), b
        if r.random() < 0.1 and "Provides: virt" in lines[b]:
            target = "virt"
        owned = [ln[6:] for ln in lines[b] if ln.startswith("File:")]
        if r.random() < 0.1 and owned:
            target = owned[0]
        lines[a].append(f"{kind}: {target}")
    return {n: tuple(v) for n, v in lines.items()}
