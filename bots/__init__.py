"""Chat adapters (Telegram, Slack): parse a message, enqueue a check, reply in the thread.

Thin by design: no analysis here; they render :class:`detector.report.Report`.
Built by the "Chat bots" issue on top of the service in ``worker/``.
"""
