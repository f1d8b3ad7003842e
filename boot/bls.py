"""Boot Loader Specification entries (``boot/loader.N/entries/*.conf``).

One ``key value`` pair a line; keys may repeat (``initrd``); ``#`` starts a
comment.  Order is preserved so that a parsed entry serializes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from boot.errors import BlsError


@dataclass(frozen=True)
class BlsEntry:
    """An immutable BLS entry: ordered (key, value) pairs."""

    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, *, source: str = "entry") -> BlsEntry:
        """Parse entry text; a line without a value raises BlsError naming ``source``."""
        items: list[tuple[str, str]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            if not value.strip() and key not in ("options",):
                raise BlsError(f"line {lineno} has no value in {source}: {line!r}")
            items.append((key, value.strip()))
        return cls(tuple(items))

    @classmethod
    def of(cls, **fields: str | None) -> BlsEntry:
        """Build an entry from keyword fields in the given order, skipping None."""
        return cls(tuple((k, v) for k, v in fields.items() if v is not None))

    def to_text(self) -> str:
        return "".join(f"{k} {v}\n" for k, v in self.items)

    def get(self, key: str) -> str | None:
        """The first value of ``key``."""
        return next((v for k, v in self.items if k == key), None)

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeatable key (``initrd``), in order."""
        return [v for k, v in self.items if k == key]

    def with_value(self, key: str, value: str) -> BlsEntry:
        """Replace the first ``key`` (dropping repeats), or append it."""
        if self.get(key) is None:
            return BlsEntry((*self.items, (key, value)))
        out: list[tuple[str, str]] = []
        for k, v in self.items:
            if k != key:
                out.append((k, v))
            elif all(k2 != key for k2, _ in out):
                out.append((k, value))
        return BlsEntry(tuple(out))


def version_key(entry: BlsEntry) -> tuple[int, int | str]:
    """Sort key for boot order: a higher ``version`` boots first (numeric when it is a number)."""
    v = entry.get("version") or ""
    return (1, int(v)) if v.isdigit() else (0, v)
