"""Benchmarks: figures are ratios against a direct call measured in the same run."""
