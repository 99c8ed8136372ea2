"""Benchmarks: separate from the tests (`make bench`); each writes its figures to benchmarks/results/."""
