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
from dataclasses import replace

from fixtures.rpmimages import Spec, spec
from importers.model import (
    DepKind,
    FileEntry,
    FileKind,
    Op,
    PackageMeta,
    PackageType,
    Relation,
)

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
    # two providers of virt: c's versioned Requires takes b (not the first, a), closing the
    # loop b <-> c; d's unversioned one takes a; e's Requires(post) on its own provide
    # orders nothing
    "versioned-providers": {"a": ("Provides: virt = 1",),
                            "b": ("Provides: virt = 2", "Requires: c"),
                            "c": ("Requires: virt >= 2",), "d": ("Requires: virt e",),
                            "e": ("Provides: virt = 3", "Requires(post): virt", "Requires: a")},
    # OrderWithRequires orders without requiring: c before the loop a <-> b
    "order-with-requires": {"a": ("Requires: b", "OrderWithRequires: c"), "b": ("Requires: a",),
                            "c": ()},
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
    "versioned-providers": ["a", "e", "c", "b", "d"],
    "order-with-requires": ["c", "b", "a"],
}

_QUALIFIERS = {"pre": 1 << 9, "post": 1 << 10, "preun": 1 << 11, "postun": 1 << 12,
               "pretrans": 1 << 7, "posttrans": 1 << 5}
_SENSES = {Op.LT: 2, Op.LE: 10, Op.EQ: 8, Op.GE: 12, Op.GT: 4, None: 0}
_KINDS = {"Requires": DepKind.DEPENDS, "Recommends": DepKind.RECOMMENDS,
          "Suggests": DepKind.SUGGESTS, "Supplements": DepKind.SUPPLEMENTS,
          "Enhances": DepKind.ENHANCES, "OrderWithRequires": DepKind.ORDER,
          "Provides": DepKind.PROVIDES}
_LINE = re.compile(r"(\w+)(?:\(([\w,]+)\))?:\s*(.*)")
_TERM = re.compile(r"(\([^()]*\)|[^\s<>=]+)(?:\s*([<>=]+)\s*(\S+))?")


def _terms(text: str) -> list[Relation]:
    """Dependencies of a spec line: names with an optional ``op version``, a parenthesised
    rich dependency kept whole."""
    return [Relation(m.group(1), Op(m.group(2)) if m.group(2) else None, m.group(3) or "")
            for m in _TERM.finditer(text)]


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
        flags = sum(_QUALIFIERS[q] for q in (m.group(2) or "").split(",") if q)
        deps.setdefault(_KINDS[m.group(1)], []).extend(
            (replace(t, flags=flags | _SENSES.get(t.op, 0)),) for t in _terms(m.group(3)))
    files = tuple(FileEntry(p.lstrip("/"), FileKind.FILE, 0o100644) for p in files_of(name, lines))
    # rpmbuild keeps each tag's dependencies sorted by name (and flags), duplicates merged
    sorted_deps = {k: tuple(sorted(set(v), key=lambda g: (g[0].name.encode(),
                                                         g[0].version, g[0].flags)))
                   for k, v in deps.items()}
    return PackageMeta(PackageType.RPM, name, "1.0", "noarch", release="1",
                       deps=sorted_deps, files=files)


def metas(shape: Shape) -> list[PackageMeta]:
    """A shape's records in rpm's transaction order (by file name, as ``rpm -i *.rpm``)."""
    return [meta_of(n, shape[n]) for n in sorted(shape)]


_RANDOM_KINDS = ("Requires",) * 6 + (
    "Requires(pre)", "Requires(post)", "Requires(postun)", "Requires(preun)",
    "Requires(posttrans)", "Recommends", "Suggests", "Supplements", "Enhances",
    "Requires(pre,post)", "OrderWithRequires")


def random_shape(seed: int) -> Shape:
    """A seeded random set of 4-12 packages: dependencies of every kind and strength on a
    package, a versioned or unversioned virtual some packages provide at versions 1-3, a
    rich ``or``/``and``/``if`` dependency, or a file another package owns."""
    r = random.Random(seed)
    names = [f"q{i}{r.choice('abcxyz')}" for i in range(r.randint(4, 12))]
    r.shuffle(names)
    lines: dict[str, list[str]] = {n: [] for n in names}
    versions = []
    for n in names:
        if r.random() < 0.3:
            versions.append(r.randint(1, 3))
            lines[n].append(f"Provides: virt = {versions[-1]}")
        if r.random() < 0.2:
            lines[n].append(f"File: /opt/shared/{n}")
    for _ in range(r.randint(len(names) - 1, 3 * len(names))):
        a, b = r.sample(names, 2)
        kind, target, x = r.choice(_RANDOM_KINDS), b, r.random()
        if x < 0.1 and versions:
            target = f"virt >= {r.choice(versions)}"
        elif x < 0.15 and versions:
            target = "virt"
        elif x < 0.25:
            other = r.choice(names)
            target = f"({b} {r.choice(['or', 'and', 'if'])} {other})"
            # rpmbuild's rules: "if" only in Requires, no rich OrderWithRequires
            kind = "Requires" if " if " in target or kind == "OrderWithRequires" else kind
        owned = [ln[6:] for ln in lines[b] if ln.startswith("File:")]
        if x > 0.9 and owned:
            target = owned[0]
        lines[a].append(f"{kind}: {target}")
    return {n: tuple(v) for n, v in lines.items()}
