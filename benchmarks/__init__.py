"""Benchmark scripts (run as python -m benchmarks.NAME); they print figures, they assert nothing."""
