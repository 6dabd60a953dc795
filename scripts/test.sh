#!/usr/bin/env bash
# Set up a virtualenv with mlvc and its dev tools, lint, and run the test suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# the web UI's tests (tests/ui) drive Debian's chromium through Playwright
# and the SQL importer's tests (tests/importers) start real PostgreSQL and MariaDB servers
need=""
command -v chromium >/dev/null || need="$need chromium"
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  || need="$need postgresql"
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need="$need mariadb-server"
if [ -n "$need" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check mlvc tests
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -n 2 -q "$@"
