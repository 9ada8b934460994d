"""Scheduled jobs for tests/test_scheduler.py."""
