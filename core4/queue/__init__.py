"""The job queue: jobs, queue operations, workers."""
