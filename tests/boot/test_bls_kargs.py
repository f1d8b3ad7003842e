"""BLS entries and kernel arguments."""

from __future__ import annotations

import pytest

from boot.bls import BlsEntry, version_key
from boot.errors import BlsError
from boot.kargs import Kargs, KargsError

OSTREE_ENTRY = (
    "title Test OS 1 (ostree:0)\nversion 2\n"
    "options ostree=/ostree/boot.0/testos/ff6d/0 quiet foo=bar\n"
    "linux /ostree/testos-ff6d/vmlinuz-6.1.0-test\n"
    "initrd /ostree/testos-ff6d/initramfs-6.1.0-test.img\n"
)


def test_bls_round_trip_and_access() -> None:
    e = BlsEntry.parse(OSTREE_ENTRY)
    assert e.to_text() == OSTREE_ENTRY
    assert e.get("version") == "2"
    assert e.with_value("version", "3").get("version") == "3"
    assert e.with_value("devicetree", "/x").get_all("devicetree") == ["/x"]


def test_bls_repeated_keys_comments_and_errors() -> None:
    e = BlsEntry.parse("# c\ntitle T\ninitrd /a\ninitrd /b\n")
    assert e.get_all("initrd") == ["/a", "/b"]
    with pytest.raises(BlsError, match="no value"):
        BlsEntry.parse("title\n", source="x.conf")


def test_version_order_is_numeric() -> None:
    entries = [BlsEntry.of(version=v) for v in ("2", "10", "1")]
    assert [e.get("version") for e in sorted(entries, key=version_key, reverse=True)] == \
        ["10", "2", "1"]


def test_kargs_parse_quotes_and_edit() -> None:
    k = Kargs.parse('root=/dev/sda1  quiet console="tty0 ttyS0" foo=1 foo=2')
    assert k.args == ("root=/dev/sda1", "quiet", 'console="tty0 ttyS0"', "foo=1", "foo=2")
    assert k.replace("foo=3").args == ("root=/dev/sda1", "quiet", 'console="tty0 ttyS0"', "foo=3")
    assert k.replace("new=1").args[-1] == "new=1"
    assert k.delete("foo=1").values("foo") == ["foo=2"]
    assert k.delete("quiet").values("quiet") == []
    assert k.append("quiet").values("quiet") == ["quiet", "quiet"]
    assert k.get("root") == "/dev/sda1"
    with pytest.raises(KargsError, match="several values"):
        k.delete("foo")
    with pytest.raises(KargsError, match="not found"):
        k.delete("absent=1")
    assert Kargs.parse(k.to_text()) == k
