"""The .origin keyfile: GKeyFile round trips, lists, pins, unknown content."""

from __future__ import annotations

from boot.origin import PACKAGES, KeyFile, Origin, join_list, split_list

# Byte-for-byte what ostree admin 2022.7 writes for a deploy and after `ostree admin pin`.
OSTREE_PLAIN = "[origin]\nrefspec=test/x\n"
OSTREE_PINNED = "[origin]\nrefspec=test/x\n\n[libostree-transient]\npinned=true\n"


def test_fresh_origin_matches_ostree_bytes() -> None:
    assert Origin.for_refspec("test/x").to_text() == OSTREE_PLAIN


def test_pin_matches_ostree_bytes_and_unpin_restores() -> None:
    pinned = Origin.parse(OSTREE_PLAIN).with_pinned(True)
    assert pinned.to_text() == OSTREE_PINNED
    assert pinned.pinned
    assert Origin.parse(OSTREE_PINNED).with_pinned(False).to_text() == OSTREE_PLAIN


def test_unknown_groups_keys_and_comments_survive() -> None:
    text = ("# made by hand\n[origin]\nbaserefspec=fedora:fedora/x86_64\nunlocked=none\n\n"
            "[rpmostree]\nregenerate-initramfs=true\ninitramfs-args=--add;ostree;\n\n"
            "[packages]\nrequested=vim;git;\n")
    o = Origin.parse(text)
    assert o.to_text() == text
    assert o.refspec == "fedora:fedora/x86_64"
    assert o.requested_packages == ["vim", "git"]
    changed = o.with_list(PACKAGES, "requested", ["vim", "git", "htop"]).with_pinned(True)
    again = Origin.parse(changed.to_text())
    assert again.requested_packages == ["vim", "git", "htop"]
    assert again.keyfile.get("rpmostree", "regenerate-initramfs") == "true"
    assert again.keyfile.get_list("rpmostree", "initramfs-args") == ["--add", "ostree"]
    assert again.to_text().startswith("# made by hand\n[origin]\n")


def test_lists_escape_separators_and_spaces() -> None:
    items = ["a;b", " lead", "back\\slash", "new\nline"]
    assert split_list(join_list(items)) == items
    assert split_list("x;y") == ["x", "y"]
    kf = KeyFile().set_list("g", "k", items)
    assert KeyFile.parse(kf.to_text()).get_list("g", "k") == items


def test_layered_origin_keeps_baserefspec_on_rebase() -> None:
    o = Origin.parse("[origin]\nbaserefspec=r:a\n").with_refspec("r:b")
    assert o.to_text() == "[origin]\nbaserefspec=r:b\n"
    assert Origin.for_refspec("r:a").with_refspec("r:b").refspec == "r:b"


def test_removing_last_key_drops_group() -> None:
    kf = KeyFile.parse("[a]\nx=1\n\n[b]\ny=2\n").set("b", "y", None)
    assert kf.to_text() == "[a]\nx=1\n"


def test_transient_group_is_not_carried_and_override_commit_is_read() -> None:
    text = ("[origin]\nrefspec=os/stable\noverride-commit=abc\n\n"
            "[libostree-transient]\npinned=true\n")
    o = Origin.parse(text)
    assert o.pinned and o.override_commit == "abc"
    fresh = o.without_transient()
    assert not fresh.pinned and fresh.to_text() == "[origin]\nrefspec=os/stable\noverride-commit=abc\n"
    assert Origin.for_refspec("os/stable").override_commit is None
