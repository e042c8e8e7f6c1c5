#!/usr/bin/env bash
# The whole test suite. Sets up first (idempotent: quick when already done), so it
# also works on a fresh clone. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff (lint) and import-linter (layering: detector/ imports no adapter, API, queue or stack)"
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -ra "$@"
