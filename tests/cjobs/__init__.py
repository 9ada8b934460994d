"""Job classes run by real workers in tests/test_chaos.py."""
