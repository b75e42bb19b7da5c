#!/usr/bin/env bash
# The 2-worker search test needs a real PostgreSQL server: install Debian's package when it is missing.
# Tests start and stop their own server in a temporary folder; nothing here runs a server.
exec "$(dirname "$0")/ensure-apt.sh" postgresql 'ls /usr/lib/postgresql/*/bin/pg_ctl' "the multi-worker search test"
