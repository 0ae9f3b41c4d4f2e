#!/usr/bin/env bash
# Install the system packages the integration tests need: OpenLDAP's slapd
# (the tests start private instances of it), the ldap-utils clients
# (ldapadd/ldapsearch) and the openssl CLI (test CA and certificates).
#
# Idempotent: does nothing when the tools are already there. The system slapd
# service that Debian's package would start on port 389 is kept from starting
# and left stopped and disabled -- the tests never use it.
set -euo pipefail

need_install=0
for tool in slapd slapadd ldapsearch ldapadd openssl; do
    # slapd/slapadd live in /usr/sbin, which is not on every user's PATH.
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        need_install=1
    fi
done

if [ "$need_install" -eq 0 ]; then
    echo "install-test-deps: slapd, ldap-utils and openssl already installed"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-test-deps: not root and sudo is missing; run as root" >&2
        exit 1
    fi
fi

# Keep invoke-rc.d from starting slapd during postinst (exit 101 = "action
# forbidden"). Many container images already ship such a policy; only add our
# own when there is none, and remove only what we added.
POLICY=/usr/sbin/policy-rc.d
added_policy=0
cleanup() {
    if [ "$added_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from install-test-deps.sh\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    added_policy=1
fi

# Tell debconf to skip creating the system directory database: the tests
# bring their own configuration, and without one the system slapd cannot
# serve anything even if something starts it later.
echo "slapd slapd/no_configuration boolean true" | "${SUDO[@]}" debconf-set-selections

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends slapd ldap-utils openssl

# Belt and braces: if a system slapd did start (no policy honoured, systemd
# host), stop it and keep it from starting at boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now slapd >/dev/null 2>&1 || true
else
    "${SUDO[@]}" service slapd stop >/dev/null 2>&1 || true
    "${SUDO[@]}" update-rc.d slapd disable >/dev/null 2>&1 || true
fi

# sed, unlike head, reads all input: no SIGPIPE failure under pipefail.
/usr/sbin/slapd -VV 2>&1 | sed -n 1p
echo "install-test-deps: done"
