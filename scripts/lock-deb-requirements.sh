#!/usr/bin/env bash
# Regenerate debian/runtime/requirements.lock: what pip resolves today for the appliance's
# dependencies (pyproject.toml) on Python 3.11, with no pip configuration of this machine applied.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
report=$(mktemp)
trap 'rm -f "$report"' EXIT
env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
  "$PY" -m pip install --dry-run --ignore-installed --quiet --report "$report" . setuptools
{
  echo "# The venv of the Debian package: exact versions of the appliance's dependencies (pyproject.toml)"
  echo "# and of setuptools (builds the appliance). Regenerate: scripts/lock-deb-requirements.sh"
  "$PY" - "$report" <<'PY'
import json, sys
for item in sorted(json.load(open(sys.argv[1]))["install"], key=lambda i: i["metadata"]["name"].lower()):
    meta = item["metadata"]
    if meta["name"] != "llm-tpu-appliance":
        print(f"{meta['name']}=={meta['version']}")
PY
} >debian/runtime/requirements.lock
