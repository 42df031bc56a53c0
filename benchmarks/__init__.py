"""Benchmarks: this project's bundle against PyTorch and Optimum (see README)."""
