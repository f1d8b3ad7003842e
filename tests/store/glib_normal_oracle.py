"""Run by Debian's /usr/bin/python3 with python3-gi: GLib's verdict on serialized GVariants.

stdin: JSON list of [sig, hex].  stdout: JSON list, one per input: null when GLib
says the bytes are not in normal form, else the hex of GLib's own serialization of
the value it reads from them (printed with types and parsed back, so built afresh).
"""

import json
import sys

from gi.repository import GLib

out = []
for sig, data in json.load(sys.stdin):
    v = GLib.Variant.new_from_bytes(GLib.VariantType.new(sig), GLib.Bytes.new(bytes.fromhex(data)),
                                    False)
    if not v.is_normal_form():
        out.append(None)
        continue
    fresh = GLib.Variant.parse(GLib.VariantType.new(sig), v.print_(True), None, None)
    out.append(bytes(fresh.get_data_as_bytes().get_data()).hex())
json.dump(out, sys.stdout)
