#!/usr/bin/env python3
"""Measured expert-parallel load balance from ds-run --profile-routing.

  routing_balance.py PLACED.json --ep 2 [--vs BLOCKS.json]

For each routing site, the tokens each of `ep` processes computes: from the
profile's `slot_counts` (a model placed by ds-place-experts: slot s is in
block s // (slots / ep)) or else its `counts` cut into contiguous blocks of
experts, as ds-partition{ep} cuts an unplaced model. Prints max / mean per
site and the mean over sites; with --vs (a profile of the unplaced model on
the same inputs), exits non-zero unless the first profile's mean is lower.
"""
import argparse
import json
import sys


def imbalance(layer, ep):
    loads = layer.get("slot_counts") or layer["counts"]
    if len(loads) % ep:
        raise SystemExit(f"{layer['name']}: {len(loads)} slots or experts do "
                         f"not split over {ep} processes")
    per = len(loads) // ep
    ranks = [sum(loads[r * per:(r + 1) * per]) for r in range(ep)]
    mean = sum(ranks) / ep
    return max(ranks) / mean if mean else 0.0


def summary(path, ep):
    with open(path) as f:
        profile = json.load(f)
    if profile.get("format") != "ds-routing-profile":
        raise SystemExit(f"{path}: not a ds routing profile")
    sites = {l["name"]: imbalance(l, ep) for l in profile["layers"]}
    for name, value in sorted(sites.items()):
        print(f"{path}: {name}: max/mean tokens per process {value:.3f}")
    mean = sum(sites.values()) / len(sites)
    print(f"{path}: mean over {len(sites)} sites {mean:.3f}")
    return mean


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--ep", type=int, required=True)
    ap.add_argument("--vs")
    args = ap.parse_args()
    mine = summary(args.profile, args.ep)
    if args.vs is None:
        return 0
    other = summary(args.vs, args.ep)
    verdict = "better" if mine < other else "NOT better"
    print(f"balance {verdict}: {mine:.3f} vs {other:.3f}")
    return 0 if mine < other else 1


if __name__ == "__main__":
    sys.exit(main())
