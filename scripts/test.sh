#!/usr/bin/env bash
# Install everything the tests need, then run them: the README's test command and what CI runs.
#   - system packages: OpenLDAP slapd + ldap-utils + openssl (the integration tests start
#     private slapd instances on 127.0.0.1), via scripts/install-test-deps.sh;
#   - a virtualenv in .venv with the package and its `test` extra.
# Extra arguments go to pytest (e.g. scripts/test.sh -k workflow).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
