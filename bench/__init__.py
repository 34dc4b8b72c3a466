"""Benchmarks: `make bench` runs them all and prints numbers (targets are printed, not asserted)."""
