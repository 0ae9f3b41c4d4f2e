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
# (compiles the hot modules with mypyc: about 80 s; see hatch_build.py)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
# The whole suite on the compiled modules, which must be there (gcc and the Python headers
# are on every machine the tests run on; RECONCILER_EXPECT_COMPILED=0 where they are not).
export RECONCILER_EXPECT_COMPILED="${RECONCILER_EXPECT_COMPILED:-1}"
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ]; then
    # The same modules as Python, as an install without a compiler runs them: their own tests.
    RECONCILER_COMPILED=0 RECONCILER_EXPECT_COMPILED=0 .venv/bin/python -m pytest -q \
        tests/test_ldapwire.py tests/test_ldap_source.py tests/test_mapping.py \
        tests/test_addresses.py tests/test_plan.py tests/test_guards.py tests/test_renames.py \
        tests/test_markdown.py tests/test_state.py tests/test_export.py tests/test_compiled.py
fi
