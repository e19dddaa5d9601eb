#!/usr/bin/env python3
"""Rewrites a ds artifact's header with a Python expression and writes a
well-formed artifact again (sections moved, checksums recomputed), so tests
can give the runtime plans that are consistent on the surface but wrong
inside.

  edit_artifact.py IN.dsa OUT.dsa 'EXPR'

EXPR runs with `h` bound to the header (a dict) and may change it in place.
"""
import json
import struct
import sys

MASK = (1 << 64) - 1


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    n = len(data) // 8 * 8
    for i in range(0, n, 8):
        (w,) = struct.unpack_from("<Q", data, i)
        h = ((h ^ w) * 0x100000001B3) & MASK
    for b in data[n:]:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def main():
    src, dst, expr = sys.argv[1:4]
    blob = open(src, "rb").read()
    assert blob[:8] == b"DSARTIF1"
    (length,) = struct.unpack_from("<Q", blob, 8)
    h = json.loads(blob[24:24 + length])
    x = h["extra"]
    code = blob[x["code_offset"]:x["code_offset"] + x["code_bytes"]]
    weights = blob[x["weights_offset"]:x["weights_offset"] + x["weights_bytes"]]
    exec(expr, {"h": h})
    align = lambda v: (v + 63) // 64 * 64
    for _ in range(4):
        header = json.dumps(h, separators=(",", ":")).encode()
        code_off = align(24 + len(header))
        weights_off = align(code_off + len(code))
        if (x["code_offset"], x["weights_offset"]) == (code_off, weights_off):
            break
        x["code_offset"], x["weights_offset"] = code_off, weights_off
    out = bytearray(b"DSARTIF1")
    out += struct.pack("<QQ", len(header), fnv1a(header)) + header
    out += b"\0" * (code_off - len(out)) + code
    out += b"\0" * (weights_off - len(out)) + weights
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main()
