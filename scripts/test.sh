#!/usr/bin/env bash
# Run the whole test suite (arguments go to pytest). Run scripts/install.sh first.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
status=$?
if [[ $status -eq 5 ]]; then
    echo "pytest collected no tests: the suite is broken" >&2
    exit 1
fi
exit $status
