"""The store commands through the real CLI: output contract and bad input."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest


@pytest.fixture
def repo(tmp_path: Path, strata) -> Path:  # type: ignore[no-untyped-def]
    strata("--repo", tmp_path / "repo", "init", "--mode", "archive")
    return tmp_path / "repo"


def _tree(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    root = tmp_path / name
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _listing(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))


def test_commit_log_show_refs_diff(tmp_path: Path, repo: Path, strata) -> None:  # type: ignore[no-untyped-def]
    a = _tree(tmp_path, "a", {"keep": "k", "gone": "g", "dir/mod": "1"})
    b = _tree(tmp_path, "b", {"keep": "k", "dir/mod": "2", "new/sub/f": "n"})
    c1 = strata("--repo", repo, "commit", "-b", "os/main", "-s", "first", "--timestamp", "100",
                "--add-metadata", "version=1", a).stdout.strip()
    c2 = strata("--repo", repo, "commit", "-b", "os/main", "-s", "second", "--body", "more",
                b).stdout.strip()
    assert len(c1) == 64 and len(c2) == 64
    assert strata("--repo", repo, "refs").stdout == "os/main\n"
    log = strata("--repo", repo, "log", "os/main").stdout
    assert log.index(c2) < log.index(c1) and "first" in log and "second" in log
    shown = json.loads(strata("--repo", repo, "--json", "show", c1[:10]).stdout)
    assert shown["checksum"] == c1 and shown["timestamp"] == 100
    assert shown["metadata"] == {"version": "1", "ostree.ref-binding": ["os/main"]}
    assert json.loads(strata("--repo", repo, "--json", "show", "os/main").stdout)["parent"] == c1
    assert strata("--repo", repo, "diff", c1, c2).stdout.splitlines() == [
        "M /dir/mod", "D /gone", "A /new", "A /new/sub", "A /new/sub/f"]
    assert strata("--repo", repo, "cat", "os/main^", "dir/mod").stdout == "1"


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path: Path, repo: Path, strata) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path, "src", {"f": "x"})
    strata("--repo", repo, "commit", "-b", "main", src)
    before = _listing(repo)
    cases = [
        ("commit", "-b", "main", tmp_path / "missing"),
        ("commit", "-b", "bad name", src),
        ("commit", "-b", "/abs", src),
        ("commit", "-b", "a//b", src),
        ("commit", "-b", "0" * 64, src),
        ("checkout", "main", tmp_path),
        ("checkout", "nosuchref", tmp_path / "co"),
        ("cat", "main", "/nope"),
        ("ls", "main", "/nope"),
    ]
    for args in cases:
        proc = strata("--repo", repo, *args, check=False)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert _listing(repo) == before
    assert not (tmp_path / "co").exists()


def test_usage_error_exits_2(repo: Path, strata) -> None:  # type: ignore[no-untyped-def]
    assert strata("--repo", repo, "commit", check=False).returncode == 2
    assert strata("--repo", repo, "init", "--mode", "weird", check=False).returncode == 2


def test_missing_repo_is_one_line_error(tmp_path: Path, strata) -> None:  # type: ignore[no-untyped-def]
    proc = strata("--repo", tmp_path / "none", "refs", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no repository at ")


def test_special_files_skipped_with_warning(tmp_path: Path, repo: Path, strata) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path, "src", {"dev/keep": "k"})
    os.mknod(src / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(src / "sock"))
    proc = strata("--repo", repo, "commit", "-b", "main", "--skip-special-files", src)
    s.close()
    assert "warning: skipped special file" in proc.stderr and "/dev/null" in proc.stderr
    listed = strata("--repo", repo, "ls", "-R", "main").stdout
    assert "/dev/keep" in listed and "/fifo" not in listed and "/sock" not in listed


def test_ls_json_and_checkout_subpath_file(tmp_path: Path, repo: Path, strata) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path, "src", {"etc/os-release": "ID=test\n"})
    strata("--repo", repo, "commit", "-b", "main", src)
    entries = json.loads(strata("--repo", repo, "--json", "ls", "main", "/etc").stdout)
    assert [e["path"] for e in entries] == ["/etc", "/etc/os-release"]
    assert entries[1]["size"] == 8 and entries[1]["mode"] == 0o100644
    strata("--repo", repo, "checkout", "--subpath", "/etc/os-release", "main",
           tmp_path / "osr")
    assert (tmp_path / "osr").read_text() == "ID=test\n"
