#!/usr/bin/env python3
"""Checks a ds-run --report (ds-error-report JSON) against error bounds.

  check_error_report.py REPORT.json --max 0.02 [--outputs prefill_logits,...]

Prints one line per output ("<name> rel_l2 <value> <= <bound> ok") and exits
non-zero when an output's relative L2 error exceeds the bound or the report
lacks it.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--max", type=float, required=True)
    ap.add_argument("--outputs", default="prefill_logits,decode_logits")
    args = ap.parse_args()
    with open(args.report) as f:
        report = json.load(f)
    if report.get("format") != "ds-error-report":
        print(f"{args.report}: not a ds error report")
        return 1
    ok = True
    for name in args.outputs.split(","):
        entry = report["outputs"].get(name)
        if entry is None:
            print(f"{name} missing")
            ok = False
            continue
        err = entry["rel_l2"]
        good = err <= args.max
        ok &= good
        print(f"{name} rel_l2 {err:.4g} <= {args.max} {'ok' if good else 'EXCEEDED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
