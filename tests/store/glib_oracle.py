"""Run by Debian's /usr/bin/python3 with python3-gi: serialize values with GLib's GVariant.

stdin: JSON list of [sig, value] with bytes as {"b": hex} and variants as {"v": [sig, value]}.
stdout: JSON list of hex strings (GLib's normal-form serialization).
"""

import json
import sys

from gi.repository import GLib


def conv(sig, v):
    if sig == "ay":
        return bytes.fromhex(v["b"])
    if sig == "v":
        return GLib.Variant(v["v"][0], conv(v["v"][0], v["v"][1]))
    if sig.startswith("a{"):
        ksig, vsig = split(sig[2:-1])
        return {conv(ksig, k): conv(vsig, x) for k, x in v}
    if sig.startswith("a"):
        return [conv(sig[1:], x) for x in v]
    if sig.startswith("m"):
        return None if v is None else conv(sig[1:], v)
    if sig.startswith("("):
        return tuple(conv(s, x) for s, x in zip(members(sig[1:-1]), v, strict=True))
    return v


def end(sig, i):
    c = sig[i]
    if c in "am":
        return end(sig, i + 1)
    if c in "({":
        i += 1
        while sig[i] not in ")}":
            i = end(sig, i)
        return i + 1
    return i + 1


def members(inner):
    out, i = [], 0
    while i < len(inner):
        j = end(inner, i)
        out.append(inner[i:j])
        i = j
    return out


def split(inner):
    m = members(inner)
    return m[0], m[1]


items = json.load(sys.stdin)
out = []
for sig, value in items:
    gv = GLib.Variant(sig, conv(sig, value))
    out.append(bytes(gv.get_data_as_bytes().get_data()).hex())
json.dump(out, sys.stdout)
