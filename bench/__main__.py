"""`python -m bench [NAME] [args]`: run one benchmark module of this package (default: list them)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "near-duplicates": "bench.near_duplicates",
    "photos": "bench.photos",
    "sync": "bench.sync",
    "visit-cpu": "bench.visit_cpu",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m bench NAME [args]; benchmarks: " + ", ".join(sorted(BENCHMARKS)))
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
