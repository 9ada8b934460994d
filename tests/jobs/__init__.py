"""Job classes used by tests/test_job.py and tests/test_execute.py only."""
