"""The outside world behind small interfaces: sources, lake, SQL store, cache, tracking."""
