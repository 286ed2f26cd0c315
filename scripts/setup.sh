#!/usr/bin/env bash
# Create .venv at the repository root if missing and install sigclass with everything the demo,
# the tests and the benchmarks need. Re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
# SIGCLASS_EXTRAS picks the extras (the tests and benchmarks need all of these); "spark" also
# installs a Java runtime when none is found.
EXTRAS=${SIGCLASS_EXTRAS:-all,demo,dev,spark}
stamp=.venv/.sigclass-installed
want=$( (cat pyproject.toml scripts/setup.sh; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
if [[ ",$EXTRAS," == *",spark,"* ]] && ! command -v java >/dev/null 2>&1 \
    && [ -z "${JAVA_HOME:-}" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing a Java runtime for PySpark"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
fi
# The quick-test page is tested in headless Chromium (Debian's package, driven by Playwright).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "Installing chromium for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
