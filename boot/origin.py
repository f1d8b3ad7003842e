"""The ``.origin`` keyfile beside each deployment, read and written as GKeyFile does.

Format (GLib key file)::

    [origin]
    refspec=remote:branch
    <blank line between groups>
    [packages]
    requested=vim;git;          # lists are ';'-terminated

Unknown groups, keys and comments survive a read/modify/write cycle in their
original order.  Values are kept raw (escaped) and unescaped on access.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from boot.errors import OriginError

ORIGIN = "origin"
PACKAGES = "packages"
OVERRIDES = "overrides"
TRANSIENT = "libostree-transient"

_UNESCAPE = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\", ";": "\\;"}


def unescape(raw: str) -> str:
    """GKeyFile value unescaping (``\\s \\n \\t \\r \\\\``); ``\\;`` stays for list splitting."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            out.append(_UNESCAPE.get(raw[i + 1], "\\" + raw[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def escape(value: str) -> str:
    """GKeyFile value escaping: a leading space, newlines, tabs, CRs and backslashes."""
    s = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if s.startswith(" "):
        s = "\\s" + s[1:]
    return s


def split_list(raw: str) -> list[str]:
    """Split a raw ``a;b;`` list value into unescaped items (``\\;`` is a literal ';')."""
    items: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(raw):
        if raw.startswith("\\;", i):
            cur.append(";")
            i += 2
        elif raw[i] == "\\" and i + 1 < len(raw):
            cur.append(raw[i : i + 2])
            i += 2
        elif raw[i] == ";":
            items.append(unescape("".join(cur)))
            cur = []
            i += 1
        else:
            cur.append(raw[i])
            i += 1
    if cur:
        items.append(unescape("".join(cur)))
    return items


def join_list(items: list[str] | tuple[str, ...]) -> str:
    """The raw value of a list: each item escaped and terminated by ';'."""
    return "".join(escape(i).replace(";", "\\;") + ";" for i in items)


@dataclass(frozen=True)
class Group:
    """One ``[name]`` section: comment lines before it, then raw key/value pairs."""

    name: str
    entries: tuple[tuple[str, str], ...] = ()
    comments: tuple[str, ...] = ()

    def get(self, key: str) -> str | None:
        for k, v in self.entries:
            if k == key:
                return v
        return None


@dataclass(frozen=True)
class KeyFile:
    """An immutable GKeyFile; setters return a new one."""

    groups: tuple[Group, ...] = ()
    trailing_comments: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, *, source: str = "keyfile") -> KeyFile:
        """Parse GKeyFile text; raises OriginError naming ``source`` and the line."""
        groups: list[Group] = []
        pending: list[str] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                if stripped:
                    pending.append(line)
                continue
            if stripped.startswith("[") and stripped.endswith("]"):
                groups.append(Group(stripped[1:-1], (), tuple(pending)))
                pending = []
            elif "=" in line and groups:
                key, _, value = line.partition("=")
                g = groups[-1]
                groups[-1] = replace(g, entries=(*g.entries, (key.strip(), value.lstrip(" "))))
            else:
                raise OriginError(f"malformed line {lineno} in {source}: {line!r}")
        return cls(tuple(groups), tuple(pending))

    def to_text(self) -> str:
        """Serialize as GKeyFile does: groups separated by one blank line."""
        chunks = []
        for g in self.groups:
            lines = [*g.comments, f"[{g.name}]", *(f"{k}={v}" for k, v in g.entries)]
            chunks.append("\n".join(lines) + "\n")
        text = "\n".join(chunks)
        if self.trailing_comments:
            text += "\n".join(self.trailing_comments) + "\n"
        return text

    def group(self, name: str) -> Group | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def get_raw(self, group: str, key: str) -> str | None:
        g = self.group(group)
        return g.get(key) if g else None

    def get(self, group: str, key: str) -> str | None:
        """The unescaped string value, or None when absent."""
        raw = self.get_raw(group, key)
        return None if raw is None else unescape(raw).replace("\\;", ";")

    def get_list(self, group: str, key: str) -> list[str]:
        """The ';'-separated list value; empty when absent."""
        raw = self.get_raw(group, key)
        return [] if raw is None else split_list(raw)

    def get_bool(self, group: str, key: str) -> bool:
        return (self.get(group, key) or "").strip().lower() in ("true", "1")

    def set_raw(self, group: str, key: str, raw: str | None) -> KeyFile:
        """Set (or with None remove) a raw value; a group left empty is dropped."""
        groups = list(self.groups)
        idx = next((i for i, g in enumerate(groups) if g.name == group), None)
        if idx is None:
            if raw is None:
                return self
            groups.append(Group(group, ((key, raw),)))
            return replace(self, groups=tuple(groups))
        g = groups[idx]
        entries = [(k, v) for k, v in g.entries if k != key or raw is not None]
        if raw is not None:
            if g.get(key) is None:
                entries.append((key, raw))
            else:
                entries = [(k, raw if k == key else v) for k, v in entries]
        if entries or g.comments:
            groups[idx] = replace(g, entries=tuple(entries))
        else:
            del groups[idx]
        return replace(self, groups=tuple(groups))

    def set(self, group: str, key: str, value: str | None) -> KeyFile:
        """A copy with ``value`` escaped and set (None removes the key)."""
        return self.set_raw(group, key, None if value is None else escape(value))

    def set_list(self, group: str, key: str, items: list[str] | tuple[str, ...]) -> KeyFile:
        """Set a list value; an empty list removes the key."""
        return self.set_raw(group, key, join_list(items) if items else None)


@dataclass(frozen=True)
class Origin:
    """What a deployment was made from, as OSTree and rpm-ostree record it."""

    keyfile: KeyFile = KeyFile()

    @classmethod
    def parse(cls, text: str, *, source: str = ".origin") -> Origin:
        """Parse an .origin keyfile; OriginError names ``source`` on malformed lines."""
        return cls(KeyFile.parse(text, source=source))

    @classmethod
    def for_refspec(cls, refspec: str) -> Origin:
        """A fresh origin following ``refspec``."""
        return cls(KeyFile().set(ORIGIN, "refspec", refspec))

    def to_text(self) -> str:
        return self.keyfile.to_text()

    @property
    def refspec(self) -> str | None:
        """``[origin] refspec``, else ``baserefspec`` (rpm-ostree's layered form)."""
        return self.keyfile.get(ORIGIN, "refspec") or self.keyfile.get(ORIGIN, "baserefspec")

    @property
    def override_commit(self) -> str | None:
        """``[origin] override-commit``: the commit of the refspec this deployment keeps
        (``deploy --version``) until an upgrade moves on, as rpm-ostree records it."""
        return self.keyfile.get(ORIGIN, "override-commit")

    @property
    def pinned(self) -> bool:
        return self.keyfile.get_bool(TRANSIENT, "pinned")

    @property
    def requested_packages(self) -> list[str]:
        return self.keyfile.get_list(PACKAGES, "requested")

    @property
    def requested_local_packages(self) -> list[str]:
        return self.keyfile.get_list(PACKAGES, "requested-local")

    @property
    def removed_base_packages(self) -> list[str]:
        return self.keyfile.get_list(OVERRIDES, "remove")

    @property
    def replaced_local_packages(self) -> list[str]:
        return self.keyfile.get_list(OVERRIDES, "replace-local")

    def without_transient(self) -> Origin:
        """A copy without ``[libostree-transient]`` (the pin), which belongs to one
        deployment and is never carried into a new one, as in ostree."""
        return Origin(replace(self.keyfile, groups=tuple(
            g for g in self.keyfile.groups if g.name != TRANSIENT)))

    def with_pinned(self, pinned: bool) -> Origin:
        """Pinned is kept as ``[libostree-transient] pinned=true``; unpinning removes it."""
        return Origin(self.keyfile.set_raw(TRANSIENT, "pinned", "true" if pinned else None))

    def with_value(self, group: str, key: str, value: str | None) -> Origin:
        """A copy with one string value set (None removes the key)."""
        return Origin(self.keyfile.set(group, key, value))

    def with_list(self, group: str, key: str, items: list[str] | tuple[str, ...]) -> Origin:
        """A copy with one list value set (empty removes the key)."""
        return Origin(self.keyfile.set_list(group, key, items))

    def with_refspec(self, refspec: str) -> Origin:
        """Follow ``refspec``; a layered origin keeps the ``baserefspec`` form."""
        if self.keyfile.get_raw(ORIGIN, "baserefspec") is not None:
            return self.with_value(ORIGIN, "baserefspec", refspec)
        return self.with_value(ORIGIN, "refspec", refspec)
