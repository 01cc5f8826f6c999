"""Benchmark suites behind ``tlalloc bench``; each module is one suite."""
