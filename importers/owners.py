"""User and group names to numeric ids, as rpm and dpkg map them onto a target image.

The default is the fixed part of a minimal Debian base (base-passwd's static
ids); :meth:`OwnerMap.from_files` reads a target image's ``passwd``/``group``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from store.repo import Repo

_BASE_USERS = {
    "root": 0, "daemon": 1, "bin": 2, "sys": 3, "sync": 4, "games": 5, "man": 6, "lp": 7,
    "mail": 8, "news": 9, "uucp": 10, "proxy": 13, "www-data": 33, "backup": 34, "list": 38,
    "irc": 39, "_apt": 42, "nobody": 65534,
}
_BASE_GROUPS = {
    "root": 0, "daemon": 1, "bin": 2, "sys": 3, "adm": 4, "tty": 5, "disk": 6, "lp": 7,
    "mail": 8, "news": 9, "uucp": 10, "man": 12, "proxy": 13, "kmem": 15, "dialout": 20,
    "fax": 21, "voice": 22, "cdrom": 24, "floppy": 25, "tape": 26, "sudo": 27, "audio": 29,
    "dip": 30, "www-data": 33, "backup": 34, "operator": 37, "list": 38, "irc": 39, "src": 40,
    "shadow": 42, "utmp": 43, "video": 44, "sasl": 45, "plugdev": 46, "staff": 50,
    "games": 60, "users": 100, "nogroup": 65534,
}


@dataclass(frozen=True)
class OwnerMap:
    """Name -> id tables; unknown names map to root (0), as rpm does after warning."""

    users: dict[str, int] = field(default_factory=lambda: dict(_BASE_USERS))
    groups: dict[str, int] = field(default_factory=lambda: dict(_BASE_GROUPS))

    def uid(self, name: str, fallback: int = 0) -> int:
        """The uid of a user name, ``fallback`` when unknown."""
        return self.users.get(name, fallback)

    def gid(self, name: str, fallback: int = 0) -> int:
        """The gid of a group name, ``fallback`` when unknown."""
        return self.groups.get(name, fallback)

    def digest(self) -> str:
        """A stable digest of the tables, so a cache made under another map is detected."""
        text = repr((sorted(self.users.items()), sorted(self.groups.items())))
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_files(cls, passwd: str, group: str) -> OwnerMap:
        """Tables from the text of an image's /etc/passwd and /etc/group."""
        return cls(users=_parse(passwd), groups=_parse(group))

    @classmethod
    def from_commit(cls, repo: Repo, rev: str) -> OwnerMap:
        """Tables of an image commit: its passwd/group under usr/etc or etc, plus
        usr/lib/passwd and usr/lib/group (nss-altfiles); the default when it has none."""
        from importers.treeread import CommitReader

        reader = CommitReader(repo, rev)
        texts = {}
        for name in ("passwd", "group"):
            parts = [reader.read(f"{d}/{name}") for d in ("usr/lib", "usr/etc", "etc")]
            texts[name] = "\n".join(p.decode("utf-8", "replace") for p in parts if p)
        if not texts["passwd"].strip():
            return cls()
        return cls.from_files(texts["passwd"], texts["group"])


def _parse(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out[parts[0]] = int(parts[2])
    return out
