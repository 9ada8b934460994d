"""Benchmarks of core4 (run as scripts, never in the test suite)."""
