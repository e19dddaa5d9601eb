#!/usr/bin/env python3
"""Compares the result<i>.npy files of two ds-run --output-dir runs.

compare_npy.py DIR_A DIR_B [--tol T]: prints the relative error
max|a - b| / max|b| of each result and MATCH when all are within T.
"""
import argparse
import os
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    names = sorted(n for n in os.listdir(args.b) if n.endswith(".npy"))
    if not names or sorted(os.listdir(args.a)) != sorted(os.listdir(args.b)):
        print("result files differ:", sorted(os.listdir(args.a)), names)
        return 1
    ok = True
    for n in names:
        a, b = np.load(os.path.join(args.a, n)), np.load(os.path.join(args.b, n))
        if a.shape != b.shape:
            print(f"{n}: shape {a.shape} != {b.shape}")
            ok = False
            continue
        err = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)) if b.size else 0.0
        print(f"{n}: shape {a.shape} relative error {err:.3e}")
        ok &= err <= args.tol
    print("MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
