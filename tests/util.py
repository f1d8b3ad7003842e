"""Helpers for tests: running strata and real tools, requiring tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def require_tool(*names: str) -> None:
    """Skip the test when a real tool is missing; fail instead under STRATA_REQUIRE_TOOLS=1 (CI)."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        msg = f"missing tools: {', '.join(missing)}"
        if os.environ.get("STRATA_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


StrataRunner = Callable[..., subprocess.CompletedProcess[str]]


def run_strata(*args: str | os.PathLike[str], check: bool = True, input: str | None = None,
                env: dict[str, str] | None = None, cwd: Path | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("STRATA_REPO", None)
    full_env.pop("STRATA_SYSROOT", None)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "layering", *map(os.fspath, args)],
        input=input, capture_output=True, text=True, env=full_env, cwd=cwd or ROOT,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"strata {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def run(argv: list[str | os.PathLike[str]], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a real tool (ostree, dpkg-deb, ...) for a test, failing loudly on error."""
    proc = subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


GPG_HOMES: list[Path] = []  # every GnuPG home a test made: their agents stop at session end


def gpg(home: Path, *args: str | os.PathLike[str]) -> None:
    """Run ``gpg`` non-interactively over the test's GnuPG ``home``."""
    run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
         *args])


def gpg_keypair(base: Path, name: str, algo: str = "ed25519",
                armor: bool = False) -> tuple[Path, Path]:
    """A signing key in a new GnuPG home ``base/gnupg-NAME``; (home, exported public key)."""
    home = base / f"gnupg-{name}"
    home.mkdir(mode=0o700)
    GPG_HOMES.append(home)
    gpg(home, "--quick-gen-key", f"{name} <{name}@example.org>", algo, "sign", "never")
    key = base / f"{name}.{'asc' if armor else 'gpg'}"
    gpg(home, *(["--armor"] if armor else []), "--output", key, "--export")
    return home, key


def stop_gpg_agents() -> None:
    """Stop the ``gpg-agent`` each test GnuPG home started (they outlive gpg otherwise)."""
    for home in GPG_HOMES:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
                       capture_output=True, check=False)
    GPG_HOMES.clear()
