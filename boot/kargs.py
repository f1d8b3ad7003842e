"""Kernel command-line arguments: parse, edit, serialize.

Arguments are kept in order as ``key`` or ``key=value`` strings.  Quoted values
(``k="a b"``) stay one argument.  Edits follow ``ostree admin deploy --karg``
(replace the first value of a key, or append) and ``rpm-ostree kargs``
(``--append`` adds, ``--delete`` removes a ``key=value`` or a lone ``key``).
"""

from __future__ import annotations

from dataclasses import dataclass

from boot.errors import BootError


class KargsError(BootError):
    """A kernel-argument edit names an argument that is not there, or is not one argument."""


def check_arg(arg: str) -> str:
    """``arg`` itself when it is one kernel argument that fits on a BLS ``options`` line;
    else KargsError (empty, a newline or other control or line-breaking character, an
    unbalanced quote, or whitespace outside quotes)."""
    if not arg:
        raise KargsError("empty kernel argument")
    bad = next((c for c in arg if not c.isprintable()), None)
    if bad is not None:
        raise KargsError(f"kernel argument {arg!r} contains a control or line-breaking "
                         f"character (U+{ord(bad):04X})")
    if arg.count('"') % 2:
        raise KargsError(f"kernel argument {arg!r} has an unbalanced double quote")
    if split_cmdline(arg) != [arg]:
        raise KargsError(f"kernel argument {arg!r} is more than one argument; "
                         "give each separately")
    return arg


def split_cmdline(text: str) -> list[str]:
    """Split a command line on whitespace, keeping double-quoted spans together."""
    args: list[str] = []
    cur: list[str] = []
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
            cur.append(c)
        elif c.isspace() and not quoted:
            if cur:
                args.append("".join(cur))
                cur = []
        else:
            cur.append(c)
    if cur:
        args.append("".join(cur))
    return args


def key_of(arg: str) -> str:
    """The key of ``key=value`` (the whole argument when it has no ``=``)."""
    return arg.split("=", 1)[0]


@dataclass(frozen=True)
class Kargs:
    """An immutable, ordered list of kernel arguments."""

    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Kargs:
        """Split a command line (see :func:`split_cmdline`)."""
        return cls(tuple(split_cmdline(text)))

    def to_text(self) -> str:
        return " ".join(self.args)

    def values(self, key: str) -> list[str]:
        """Every argument named ``key``, in order."""
        return [a for a in self.args if key_of(a) == key]

    def get(self, key: str) -> str | None:
        """The value of the first ``key=value`` argument ('' for a bare ``key``)."""
        for a in self.values(key):
            return a.partition("=")[2]
        return None

    def append(self, arg: str) -> Kargs:
        """Add ``arg`` at the end, even when its key is already present; KargsError unless
        it is one valid argument (:func:`check_arg`)."""
        return Kargs((*self.args, check_arg(arg)))

    def replace(self, arg: str) -> Kargs:
        """Set ``key`` to this argument: the first occurrence changes, later ones go;
        KargsError unless it is one valid argument (:func:`check_arg`)."""
        key = key_of(check_arg(arg))
        if not self.values(key):
            return self.append(arg)
        out: list[str] = []
        for a in self.args:
            if key_of(a) != key:
                out.append(a)
            elif all(key_of(o) != key for o in out):
                out.append(arg)
        return Kargs(tuple(out))

    def delete(self, arg: str) -> Kargs:
        """Remove ``key=value`` exactly, or a ``key`` that has one value; else KargsError."""
        if arg in self.args:
            idx = self.args.index(arg)
            return Kargs(self.args[:idx] + self.args[idx + 1 :])
        matches = self.values(arg) if "=" not in arg else []
        if len(matches) == 1:
            return Kargs(tuple(a for a in self.args if key_of(a) != arg))
        if len(matches) > 1:
            raise KargsError(f"kernel argument {arg!r} has several values; name one as key=value")
        raise KargsError(f"kernel argument {arg!r} not found in the current arguments")

    def without(self, key: str) -> Kargs:
        """Every argument except those named ``key``."""
        return Kargs(tuple(a for a in self.args if key_of(a) != key))
