#!/usr/bin/env python3
"""Breaks a tiny checkpoint in one named way, for the bad-input tests.

edit.py DIR MODE [ARG]
  config KEY JSON   set config.json KEY to the JSON value (null deletes)
  truncate          cut model.safetensors to 100 bytes
  header-too-big    claim a header longer than the file
  overlap           make the second tensor overlap the first
  drop TENSOR       remove a tensor from the file
  bad-json          corrupt the header JSON
"""
import json
import os
import struct
import sys

d, mode = sys.argv[1], sys.argv[2]
if mode == "config":
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    value = json.loads(sys.argv[4])
    if value is None:
        c.pop(sys.argv[3], None)
    else:
        c[sys.argv[3]] = value
    json.dump(c, open(p, "w"))
    sys.exit(0)

p = os.path.join(d, "model.safetensors")
data = open(p, "rb").read()
(n,) = struct.unpack("<Q", data[:8])
header = json.loads(data[8:8 + n])
body = data[8 + n:]


def write(h, b):
    text = json.dumps(h).encode()
    open(p, "wb").write(struct.pack("<Q", len(text)) + text + b)


if mode == "truncate":
    open(p, "wb").write(data[:100])
elif mode == "header-too-big":
    open(p, "wb").write(struct.pack("<Q", len(data)) + data[8:])
elif mode == "bad-json":
    open(p, "wb").write(data[:8] + b"{" * n + body)
elif mode == "overlap":
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    a, b = header[names[0]], header[names[1]]
    size = b["data_offsets"][1] - b["data_offsets"][0]
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + size]
    write(header, body)
elif mode == "drop":
    name = sys.argv[3]
    b0, b1 = header[name]["data_offsets"]
    del header[name]
    for k, v in header.items():
        if k != "__metadata__" and v["data_offsets"][0] >= b1:
            v["data_offsets"] = [v["data_offsets"][0] - (b1 - b0), v["data_offsets"][1] - (b1 - b0)]
    write(header, body[:b0] + body[b1:])
else:
    sys.exit("unknown mode " + mode)
