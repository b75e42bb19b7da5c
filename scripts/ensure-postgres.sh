#!/usr/bin/env bash
# The 2-worker search test needs a real PostgreSQL server: install Debian's package when it is missing.
# Tests start and stop their own server in a temporary folder; nothing here runs a server.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "PostgreSQL is not installed and this user cannot install it (apt-get install postgresql)" >&2
  [ "${CI:-}" = "true" ] && exit 1 || exit 0
fi
echo "installing PostgreSQL (Debian package) for the multi-worker search test"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq postgresql >/dev/null
