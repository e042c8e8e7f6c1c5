"""Celery workers that run :mod:`detector` on queued jobs (built by the "Service" issue).

Models load once per worker process, after fork, through ``detector.pipeline.Analyzer``.
"""
