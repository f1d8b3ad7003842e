"""OpenPGP checks with the real ``gpgv``: keyrings prepared in a scratch directory.

gpgv reads binary keyrings only, so ASCII-armored keys are de-armored first.
"""

from __future__ import annotations

import base64
from pathlib import Path

from importers.errors import SourceSignatureError
from store.errors import CommandError
from store.run import run


def dearmor(text: str) -> bytes:
    """The binary packets of an ASCII-armored OpenPGP block."""
    body: list[str] = []
    inside = False
    for line in text.strip().splitlines():
        if line.startswith("-----BEGIN"):
            inside, body = True, []
            continue
        if line.startswith("-----END"):
            break
        if inside and line.strip() and ":" not in line and not line.startswith("="):
            body.append(line.strip())
    return base64.b64decode("".join(body))


def binary_keyrings(paths: list[Path], scratch: Path) -> list[Path]:
    """Keyring files usable by gpgv: binary ones as they are, armored ones converted."""
    out = []
    for i, p in enumerate(paths):
        data = p.read_bytes() if p.is_file() else b""
        if data.lstrip().startswith(b"-----BEGIN"):
            converted = scratch / f"key{i}.gpg"
            converted.write_bytes(dearmor(data.decode("ascii", "replace")))
            out.append(converted)
        elif data:
            out.append(p)
    return out


def gpgv(data: bytes, signature: bytes | None, keyrings: list[Path], scratch: Path, *,
         label: str) -> bytes:
    """Verify ``data`` (clearsigned when ``signature`` is None, else detached-signed).

    Returns the signed content; raises SourceSignatureError when no key of
    ``keyrings`` made a good signature.
    """
    if not keyrings:
        raise SourceSignatureError(f"no keyring to verify {label}")
    argv: list[str | Path] = ["gpgv", "--homedir", scratch]
    for k in keyrings:
        argv += ["--keyring", k]
    content = scratch / "signed-data"
    content.write_bytes(data)
    if signature is None:
        argv += ["--output", "-", content]
    else:
        sig = scratch / "signature"
        sig.write_bytes(signature)
        argv += [sig, content]
    try:
        proc = run(argv)
    except CommandError as e:
        raise SourceSignatureError(f"{label} does not verify: {e.stderr_tail}") from e
    return proc.stdout if signature is None else data
