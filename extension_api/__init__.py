"""The HTTP API used by the browser extension and the report pages (aiohttp).

Built by the "Service" issue: jobs go to Celery workers over Redis; results are
:class:`detector.report.Report` JSON and the gallery PNG.
"""
