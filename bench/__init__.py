"""Benchmarks: `python -m bench NAME` (or `./dev bench NAME`); results go to bench/results/NAME.json."""
