"""Imports point one way: store <- importers, boot <- layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"store", "importers", "boot", "layering"}
ALLOWED = {"store": set(), "importers": {"store"}, "boot": {"store"},
           "layering": {"store", "importers", "boot"}}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for used in _imported_packages(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(ROOT)} imports {used}")
    assert not bad, bad


def test_library_never_prints_or_exits() -> None:
    bad = []
    for package in ("store", "importers", "boot"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                        and node.func.id == "print":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} print()")
                if isinstance(node, ast.Attribute) and node.attr == "exit" and \
                        isinstance(node.value, ast.Name) and node.value.id == "sys":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} sys.exit")
    assert not bad, bad


def test_the_command_loads_no_payload_reader_until_a_package_is_unpacked() -> None:
    """Start-up is paid on every command: the CLI and compose (which reads dpkg status and
    apt catalogues) must not load libarchive, rpm's reader or the signing code, nor the
    rpm side (rpm-md, rpmdb, rpm's transaction: about 12 ms) that only rpm images use."""
    import subprocess
    import sys

    code = ("import sys, layering.cli, layering.compose, layering.client, "
            "layering.cli.compose, layering.composekey; "
            "print(' '.join(sorted(m for m in ('libarchive', 'importers.payload', "
            "'importers.rpm', 'importers.deb', 'cryptography', 'store.sign', "
            "'importers.rpmmd', 'importers.rpmdb', 'layering.rpmtrans', 'layering.rpmremove', "
            "'layering.rpmorder', 'layering.rpmdbupdate', 'sqlite3', 'xml.etree') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == ""


def test_the_object_store_never_imports_replication() -> None:
    """store/ is two concerns: the object store, and store/replication/ (fetcher, pull,
    remotes, summaries, deltas) built on it; the object store must stand without it."""
    bad = []
    for path in sorted((ROOT / "store").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.relative_to(ROOT)} imports {n}" for n in names
                    if n.startswith("store.replication")]
    assert not bad, bad


# Loaded only where needed: HTTP (urllib3 pulls in ssl, http.client, email), signatures,
# terminal progress, package payloads and the solver.
NOT_AT_START = ("urllib3", "ssl", "http.client", "cryptography", "store.sign", "rich",
                "libarchive", "importers.payload", "solv")
_DUMP = ("import runpy, sys\n"
         "sys.argv = ['strata', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('layering', run_name='__main__')\n"
         "except SystemExit as e:\n    code = e.code\n"
         "print('loaded:', *(m for m in {names!r} if m in sys.modules), file=sys.__stderr__)\n")


def _loaded_by(*argv: str) -> list[str]:
    """Run the strata command in a fresh interpreter (stderr a pipe, not a terminal);
    which of NOT_AT_START it loaded."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _DUMP.format(names=NOT_AT_START), *argv],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.splitlines()[-1].split()[1:]  # the last line: "loaded: ..."


def test_the_command_line_starts_without_http_signing_or_progress_bars() -> None:
    """``strata --help`` and a command's ``--help`` load none of the heavy modules."""
    assert _loaded_by("--help") == []
    assert _loaded_by("pull", "--help") == []


def test_a_file_url_pull_loads_no_http_client_signing_or_progress_bars(
        tmp_path: Path) -> None:
    """A pull from a ``file://`` remote without signatures, stderr not a terminal: no urllib3
    (nor ssl, http.client), no cryptography, no rich.  Fails while urllib3 was imported
    with the fetcher."""
    import shutil
    import subprocess

    if shutil.which("ostree") is None:
        pytest.skip("ostree missing")
    src, tree, dst = tmp_path / "src", tmp_path / "tree", tmp_path / "dst"
    (tree / "usr").mkdir(parents=True)
    (tree / "usr/file").write_text("content\n")
    for argv in (["init", f"--repo={src}", "--mode=archive"],
                 ["commit", f"--repo={src}", "-b", "main", str(tree)],
                 ["summary", "-u", f"--repo={src}"],
                 ["init", f"--repo={dst}", "--mode=bare-user"],
                 ["remote", "add", f"--repo={dst}", "--no-gpg-verify", "origin", src.as_uri()]):
        subprocess.run(["ostree", *argv], check=True, capture_output=True)
    for _first_then_noop in range(2):
        assert _loaded_by("--repo", str(dst), "pull", "origin", "main") == []
    assert (dst / "refs/remotes/origin/main").exists()
