#!/usr/bin/env bash
# Install a Debian package the tests need when it is missing: ensure-apt.sh PACKAGE 'PROBE' 'WHY'
# (PROBE: a shell test that succeeds when it is installed). Without root or sudo: a line on stderr, and exit 1 in CI.
set -euo pipefail
package="$1" probe="$2" why="$3"
if eval "$probe" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "$package is not installed and this user cannot install it (apt-get install $package)" >&2
  [ "${CI:-}" = "true" ] && exit 1 || exit 0
fi
echo "installing $package (Debian package) for $why"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq "$package" >/dev/null
