"""Evaluation domain: out-of-sample backtests and promotion proposals (the first vote)."""
