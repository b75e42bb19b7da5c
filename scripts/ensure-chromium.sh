#!/usr/bin/env bash
# The web UI's browser tests (tests/ui) drive Debian's Chromium through playwright (playwright cannot download
# its own browsers here): install the chromium package when /usr/bin/chromium is missing.
exec "$(dirname "$0")/ensure-apt.sh" chromium 'test -x /usr/bin/chromium' "the web UI's browser tests"
