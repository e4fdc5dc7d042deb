#!/usr/bin/env bash
# Install the Debian packages given as arguments, skipping those already present
# (the Makefile's SYSTEM_PACKAGES: libvirt, nfs-ganesha, MariaDB with galera-4, haproxy, ...).
#
# Safe to run on every build: when nothing is missing it only asks dpkg and exits.
# Package maintainer scripts are kept from starting services (the test suite starts
# its own daemons, and the machine may have no init system to hand them to).
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PACKAGE..." >&2
    exit 2
fi

missing=()
for package in "$@"; do
    status=$(dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system packages: all $# present"
    exit 0
fi

echo "system packages missing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing packages needs root; run as root:" >&2
    echo "  apt-get update && apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

# Debian's invoke-rc.d consults this hook; exit status 101 means "do not start".
# Only a hook we created is removed, so a machine's own policy stays untouched.
policy_hook=/usr/sbin/policy-rc.d
created_policy_hook=""
remove_policy_hook() {
    if [ -n "$created_policy_hook" ]; then
        rm -f "$policy_hook"
    fi
}
trap remove_policy_hook EXIT
if [ ! -e "$policy_hook" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy_hook"
    chmod 0755 "$policy_hook"
    created_policy_hook=1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "system packages: installed ${missing[*]}"
