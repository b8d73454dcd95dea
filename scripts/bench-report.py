#!/usr/bin/env python3
"""Prints the scoped-overhead benchmark as a markdown table: the median of each side and
the ratio scoped / hand-written SeaORM, from criterion's estimates of the last run."""
import json
import os
import sys

root = os.environ.get("CARGO_TARGET_DIR", "target")
base = os.path.join(root, "criterion")
rows = []
for group in ("pk_lookup", "select_100"):
    for backend in ("sqlite", "postgres"):
        medians = {}
        for side in ("seaorm", "scoped"):
            path = os.path.join(base, f"{group}_{backend}", side, "new", "estimates.json")
            if not os.path.exists(path):
                path = os.path.join(base, f"{group}/{backend}", side, "new", "estimates.json")
            try:
                with open(path) as f:
                    medians[side] = json.load(f)["median"]["point_estimate"]
            except FileNotFoundError:
                sys.exit(f"missing {path}: run `cargo bench -p tenancy-tests --bench scoped_overhead` first")
        ratio = medians["scoped"] / medians["seaorm"]
        rows.append((group, backend, medians["seaorm"] / 1000, medians["scoped"] / 1000, ratio))

print("| query | backend | SeaORM by hand (µs, median) | scoped handle (µs, median) | ratio |")
print("|---|---|---:|---:|---:|")
for group, backend, seaorm, scoped, ratio in rows:
    print(f"| {group} | {backend} | {seaorm:.1f} | {scoped:.1f} | {ratio:.3f} |")
