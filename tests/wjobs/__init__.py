"""Jobs run by real worker processes in tests/test_worker.py.

A job reports what it saw through its own pymongo client (collections
``w_report`` and ``w_flags`` of the test's database), since it runs in a
process of its own.
"""
