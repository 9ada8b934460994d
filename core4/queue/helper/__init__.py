"""Helpers for users of core4: run jobs in-process, example jobs."""
