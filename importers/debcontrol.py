"""Debian control stanzas as package records: a package's control file or a ``Packages`` entry.

Kept apart from :mod:`importers.deb` so that reading an image's dpkg status or
an apt catalogue does not load the payload reader (libarchive).
"""

from __future__ import annotations

from debian.deb822 import Deb822

from importers.errors import PackageFormatError
from importers.model import DepKind, Origin, PackageMeta, PackageType, parse_deb_relations

RELATION_FIELDS = {
    "Pre-Depends": DepKind.PRE_DEPENDS, "Depends": DepKind.DEPENDS,
    "Recommends": DepKind.RECOMMENDS, "Suggests": DepKind.SUGGESTS,
    "Enhances": DepKind.ENHANCES, "Conflicts": DepKind.CONFLICTS, "Breaks": DepKind.BREAKS,
    "Provides": DepKind.PROVIDES, "Replaces": DepKind.REPLACES,
}


def meta_from_control(text: str, *, origin: Origin) -> PackageMeta:
    """A record from one control stanza (a package's control file or a Packages entry)."""
    return meta_from_stanza(Deb822(text), text, origin=origin)


def meta_from_stanza(para: Deb822, text: str, *, origin: Origin) -> PackageMeta:
    """:func:`meta_from_control` of a stanza already parsed (``text`` is its source)."""
    for key in ("Package", "Version"):
        if key not in para:
            raise PackageFormatError(f"control data lacks {key}: {text[:60]!r}")
    epoch, version, revision = split_version(para["Version"])
    try:
        deps = {kind: parse_deb_relations(para[field]) for field, kind in RELATION_FIELDS.items()
                if para.get(field)}
    except KeyError as e:  # an operator dpkg does not know, e.g. "=<"
        raise PackageFormatError(f"control data of {para['Package']} has a relation with the "
                                 f"unknown operator {e}") from None
    return PackageMeta(
        type=PackageType.DEB, name=para["Package"], version=version, release=revision,
        epoch=epoch, arch=para.get("Architecture", "all"), origin=origin, deps=deps,
        installed_size=_int(para.get("Installed-Size", "0")), source=para.get("Source", ""),
        summary=para.get("Description", "").split("\n")[0], multi_arch=para.get("Multi-Arch", ""),
        essential=para.get("Essential", "no") == "yes", control=text.strip() + "\n",
        location=para.get("Filename", ""), size=_int(para.get("Size", "0")),
        checksum=para.get("SHA256", ""))


def split_version(v: str) -> tuple[int, str, str]:
    """dpkg's ``[epoch:]upstream[-revision]`` as (epoch, upstream, revision)."""
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    version, dash, revision = rest.rpartition("-")
    if not dash:
        version, revision = rest, ""
    return _int(epoch), version, revision


def _int(s: str) -> int:
    try:
        return int(s.strip())
    except ValueError:
        return 0
