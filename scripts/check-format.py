#!/usr/bin/env python3
"""Fails when a tracked C++ file is not formatted by clang-format-22.

Usage: check-format.py [--root DIR] [--fix]
"""
import argparse
import os
import shutil
import subprocess
import sys

EXTS = (".cpp", ".h", ".hpp", ".cc", ".cu")


def tracked_files(root):
    try:
        out = subprocess.run(["git", "-C", root, "ls-files"], check=True,
                             capture_output=True, text=True).stdout
        files = out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, _, names in os.walk(root):
            if "/build" in d or "/.git" in d:
                continue
            files += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(f for f in files if f.endswith(EXTS))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    ap.add_argument("--fix", action="store_true")
    args = ap.parse_args()
    cf = shutil.which("clang-format-22") or shutil.which("clang-format")
    if not cf:
        print("error: clang-format-22 not found", file=sys.stderr)
        return 2
    files = tracked_files(args.root)
    bad = []
    for f in files:
        path = os.path.join(args.root, f)
        if not os.path.exists(path):
            continue
        cmd = [cf, "-i", path] if args.fix else [cf, "--dry-run", "--Werror", path]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            bad.append(f)
    if bad:
        print("not formatted (run scripts/check-format.py --fix):")
        for f in bad:
            print("  " + f)
        return 1
    print(f"{len(files)} C++ files formatted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
