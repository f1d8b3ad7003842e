"""A wheel of strata holds everything ``python -m layering.demo`` imports: the wheel is
built from a copy of the tree and the demo module is imported from the installed wheel
alone (the venv's site-packages give the dependencies, never the source tree)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = ("store", "importers", "boot", "layering", "fixtures")


def test_demo_imports_from_the_installed_wheel(tmp_path: Path) -> None:
    src = tmp_path / "src"  # setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", src)
    for name in PACKAGED:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("strata-*.whl"))
    target = tmp_path / "installed"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    # -S: no .pth processing, so the venv's editable install cannot reach the source tree
    deps = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [sys.executable, "-S", "-c",
         "import layering.demo, layering.cli, sys; print(layering.demo.__file__)"],
        cwd=tmp_path, env={"PYTHONPATH": f"{target}:{deps}", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target / "layering" / "demo.py")
