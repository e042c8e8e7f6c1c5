"""The whole service on one machine: Redis, a Celery worker, the API and the bots.

It sits above every other package (it starts the worker and the API, and imports the
API's token helper), so it lives outside them: nothing in ``detector``, ``worker``,
``extension_api`` or ``bots`` imports it. Run it as ``deepfake-serve`` or
``python -m stack``.
"""
