"""Do two runs give the same numbers? Compare their ``metrics.json`` value by value, timings left out.

For a change that must not move any result (a refactor, a speed-up): run the same command and seed
on the old and the new commit, then ::

    python benchmarks/same_numbers.py OLD_RUN NEW_RUN            # bit for bit (the CPU promise)
    python benchmarks/same_numbers.py OLD_RUN NEW_RUN --rtol 1e-6  # e.g. across machines or devices

OLD_RUN / NEW_RUN: run folders or ``metrics.json`` files. Every leaf of the JSON (dict keys and list
indices joined into a path such as ``history[19].target_accuracy``) present on both sides is
compared, except timings: leaves whose path contains ``second`` or ``per_s`` (seconds, steps or
images per second), which differ from run to run by nature. Prints the counts, each differing value
and the leaves only one side has; ``--json`` writes the same. Exit status: 0 when no shared value
differs, 1 otherwise, 2 for an unreadable input.

Written by hand: the comparison is a few lines over ``json``; no library does "equal except these
keys" with the report wanted here.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from vislab.errors import MalformedRunError
from vislab.io import write_json
from vislab.runs import read_run_json

TIMING_MARKERS = ("second", "per_s")


def leaves(value, path: str = "") -> dict[str, object]:
    """``{"a.b[0]": leaf, ...}`` for every non-container value in ``value``."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in leaves(item, f"{path}[{i}]").items()}
    return {path: value}


def is_timing(path: str) -> bool:
    return any(marker in path for marker in TIMING_MARKERS)


def same(a, b, rtol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 in Python; not here
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=0.0) or (a != a and b != b)  # nan == nan here
    return a == b


def compare(old: dict, new: dict, rtol: float = 0.0) -> dict:
    o, n = leaves(old), leaves(new)
    shared = [k for k in o if k in n]
    timings = [k for k in shared if is_timing(k)]
    compared = [k for k in shared if not is_timing(k)]
    differing = {k: [o[k], n[k]] for k in compared if not same(o[k], n[k], rtol)}
    return {"shared": len(shared), "timings_left_out": len(timings), "identical": len(compared) - len(differing),
            "differing": differing, "only_old": [k for k in o if k not in n], "only_new": [k for k in n if k not in o],
            "rtol": rtol}


def _read(arg: str) -> dict:
    path = Path(arg)
    try:
        return read_run_json(path / "metrics.json" if path.is_dir() else path)
    except MalformedRunError as e:
        print(f"same_numbers: {e}; pass a finished run folder or its metrics.json", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="run folder (or metrics.json) of the reference side")
    parser.add_argument("new", help="run folder (or metrics.json) of the side under test")
    parser.add_argument("--rtol", type=float, default=0.0,
                        help="relative tolerance for numbers (default 0: bit for bit)")
    parser.add_argument("--json", type=Path, help="also write the comparison to this file")
    args = parser.parse_args(argv)
    result = compare(_read(args.old), _read(args.new), args.rtol)
    print(f"{result['shared']} shared values, {result['timings_left_out']} timings left out: "
          f"{result['identical']} identical, {len(result['differing'])} differing"
          + (f" (rtol {args.rtol:g})" if args.rtol else ""))
    for key, (a, b) in result["differing"].items():
        print(f"  differs  {key}: {a!r} -> {b!r}")
    for side in ("old", "new"):
        for key in result[f"only_{side}"]:
            print(f"  only {side:<3} {key}")
    if args.json:
        write_json(args.json, result)
    return 1 if result["differing"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # piped into `head`: stop quietly (the recipe of Python's signal docs)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
