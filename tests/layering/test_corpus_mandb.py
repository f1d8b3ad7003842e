"""The apt corpus's comparison of man-db's index (tests/layering/corpus_mandb.py), with real
``mandb``, ``accessdb`` and ``ostree``: a tree laid out as dpkg leaves it against a hardlink
checkout of the same tree from an OSTree repository."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from tests.layering.corpus_mandb import index_diff, read_index
from tests.util import require_tool, run

MAN = "usr/share/man"
PAGES = {"pic": "compile pictures for troff or TeX", "tbl": "format tables for troff"}


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tool("mandb", "accessdb", "ostree")
    if os.geteuid() != 0:
        pytest.skip("an OSTree bare checkout and mandb's cache ownership need root")


def _tree(root: Path, pages: dict[str, str], *, copy_links: bool = False) -> Path:
    """A manual hierarchy with PAGE.1.gz and gPAGE.1.gz -> PAGE.1.gz (a copy if
    ``copy_links``), as groff-base ships gpic and gtbl."""
    man1 = root / MAN / "man1"
    man1.mkdir(parents=True)
    for name, whatis in pages.items():
        text = f'.TH {name.upper()} 1\n.SH NAME\n{name} \\- {whatis}\n.SH DESCRIPTION\nx\n'
        (man1 / f"{name}.1.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
        if copy_links:
            shutil.copy(man1 / f"{name}.1.gz", man1 / f"g{name}.1.gz")
        else:
            (man1 / f"g{name}.1.gz").symlink_to(f"{name}.1.gz")
    return root


def _ostree_checkout(tree: Path, dest: Path) -> Path:
    """``tree`` committed to a bare OSTree repository and checked out (hard links) at ``dest``."""
    repo = dest.parent / f"{dest.name}-repo"
    run(["ostree", f"--repo={repo}", "init", "--mode=bare"])
    run(["ostree", f"--repo={repo}", "commit", "-b", "t", tree])
    run(["ostree", f"--repo={repo}", "checkout", "t", dest])
    return dest


def _index(root: Path) -> str:
    """``mandb -c`` over the tree's manual hierarchy; the index it wrote, moved out of it."""
    run(["mandb", "-c", "-q", root / MAN])
    index = root.parent / f"{root.name}-index.db"
    shutil.move(root / MAN / "index.db", index)
    return str(index)


def _flag(index: str, key: str) -> str:
    return read_index(index)[key].strip('"').split(" ")[5]


def test_a_hard_linked_symlink_page_differs_only_by_man_dbs_hard_link_rule(tmp_path: Path) -> None:
    apt = _tree(tmp_path / "apt", PAGES)
    strata = _ostree_checkout(_tree(tmp_path / "src", PAGES), tmp_path / "strata")
    assert os.lstat(strata / MAN / "man1/gpic.1.gz").st_nlink > 1
    a, s = _index(apt), _index(strata)
    assert (_flag(a, "gpic"), _flag(s, "gpic")) == ("B", "A")  # man-db's own decision
    assert len(index_diff(s, a, None, MAN)) == 2  # gpic, gtbl: only the flag differs
    assert index_diff(s, a, (strata, apt), MAN) == []


def test_an_index_missing_the_pages_of_a_later_package_differs(tmp_path: Path) -> None:
    """An index not updated after tbl's package (man-db's trigger not run) is caught."""
    apt = _tree(tmp_path / "apt", PAGES)
    before = _ostree_checkout(_tree(tmp_path / "src0", {"pic": PAGES["pic"]}), tmp_path / "s0")
    strata = _ostree_checkout(_tree(tmp_path / "src", PAGES), tmp_path / "strata")
    stale, a = _index(before), _index(apt)
    assert index_diff(stale, a, (strata, apt), MAN) == [
        "gtbl: only in apt's index", "tbl: only in apt's index"]


def test_a_flag_from_another_kind_of_page_file_is_not_excused(tmp_path: Path) -> None:
    """gpic.1.gz a copy on one side and a symlink on the other: the hard-link rule does not
    explain 'A' versus 'B', so the entries differ (the tree comparison reports the file too)."""
    apt = _tree(tmp_path / "apt", PAGES)
    strata = _tree(tmp_path / "strata", PAGES, copy_links=True)
    s, a = _index(strata), _index(apt)
    assert [line.split(":")[0] for line in index_diff(s, a, (strata, apt), MAN)] == [
        "gpic", "gtbl"]
