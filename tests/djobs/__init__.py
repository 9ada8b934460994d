"""Jobs run by real worker processes in tests/test_dependency.py."""
