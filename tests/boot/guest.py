"""strata inside a booted guest: the packages the guest needs, built by the host.

- :func:`strata_deb`: strata itself as a Debian package (``/usr/lib/strata`` holds
  the wheel built from this checkout, installed with its dependencies; solv is the
  build with Debian support that ``make`` made; the systemd units of ``packaging/``,
  ``strata-finalize-staged.service``), composed onto the bootable base like any
  local package, so the image carries it.
- :func:`service_deb`: a package with a systemd service that runs as a system user
  its postinst creates, the thing a person layers on a host and expects at boot.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from fixtures.images import build_deb
from tests.boot.vm import CACHE
from tests.util import run

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = """#!/bin/sh
exec /usr/bin/python3 -c 'import sys; sys.path[:0] = ["/usr/lib/strata"]; \
from layering.cli import main; sys.argv[0] = "strata"; main()' "$@"
"""


def _deps_dir() -> Path:
    """strata's Python dependencies installed for the guest's python3 (cached by their list)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    final = CACHE / f"guest-deps-{hashlib.sha256(repr(deps).encode()).hexdigest()[:16]}"
    if final.is_dir():
        return final
    tmp = Path(f"{final}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ, CMAKE_ARGS="-DMULTI_SEMANTICS=ON -DENABLE_DEBIAN=ON")
    run([sys.executable, "-m", "pip", "install", "-q", "--no-binary", "solv",
         "--target", tmp / "site", *deps], env=env, timeout=1800)
    os.rename(tmp, final)
    return final


def strata_deb(out: Path) -> Path:
    """``strata_0.1.0_all.deb``: this checkout's wheel and the cached dependencies."""
    site = _deps_dir() / "site"
    files: dict[str, bytes] = {}
    for base, _dirs, names in os.walk(site):
        for n in names:
            p = Path(base) / n
            if "__pycache__" in p.parts or p.suffix == ".pyc" or p.is_symlink():
                continue
            files[f"usr/lib/strata/{p.relative_to(site)}"] = p.read_bytes()
    wheel_dir = out / "wheel"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheel_dir, ROOT],
        timeout=600)
    (wheel,) = wheel_dir.glob("strata-*.whl")
    unpacked = out / "wheel-unpacked"
    subprocess.run([sys.executable, "-m", "zipfile", "-e", str(wheel), str(unpacked)],
                   check=True)
    for own in ("store", "importers", "boot", "layering"):
        for p in (unpacked / own).rglob("*.py"):
            files[f"usr/lib/strata/{p.relative_to(unpacked)}"] = p.read_bytes()
    files["usr/bin/strata"] = WRAPPER.encode()
    for unit in sorted((ROOT / "packaging").glob("*.service")):  # strata-finalize-staged
        files[f"usr/lib/systemd/system/{unit.name}"] = unit.read_bytes()
    files["usr/share/doc/strata/staged.md"] = (ROOT / "docs/staged.md").read_bytes()
    return build_deb(out, "strata", "0.1.0", files=files,
                     control="Depends: python3, bubblewrap, libarchive13, libxml2\n",
                     compression="gzip")


SERVICE = """[Unit]
Description=strata boot test service

[Service]
Type=oneshot
RemainAfterExit=yes
User=strata-svc
ExecStart=/bin/sh -c 'id -un > /run/strata-svc/whoami'
RuntimeDirectory=strata-svc

[Install]
WantedBy=multi-user.target
"""

SERVICE_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  getent passwd strata-svc >/dev/null || useradd --system --home-dir /nonexistent \
      --shell /usr/sbin/nologin --user-group strata-svc
  mkdir -p /var/lib/strata-svc
  chown strata-svc:strata-svc /var/lib/strata-svc
  systemctl enable strata-svc.service
fi
"""


def service_deb(out: Path) -> Path:
    """``strata-svc``: a service running as the system user its postinst creates."""
    return build_deb(out, "strata-svc", "1.0",
                     files={"usr/lib/systemd/system/strata-svc.service": SERVICE.encode(),
                            "usr/share/doc/strata-svc/README": b"boot test service\n"},
                     scripts={"postinst": SERVICE_POSTINST})
