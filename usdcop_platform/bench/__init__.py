"""Benchmarks run by `usdcop bench NAME`: ours and the named peer measured in the same run."""
