#!/bin/sh
# Runs redis-server in a session (and process group) of its own, so that a Ctrl-C
# in the terminal reaches only `emp start`, which stops Redis itself after the
# workers have finished or handed back their jobs. Arguments go to redis-server.
if ! command -v redis-server >/dev/null 2>&1; then
  echo 'redis-server is not on PATH: install Redis 7+ (Debian: apt-get install redis-server), or set REDIS_URL to a Redis to use' >&2
  exit 127
fi
if command -v setsid >/dev/null 2>&1; then exec setsid redis-server "$@"; fi
exec perl -e 'setpgrp(0, 0); exec { $ARGV[0] } @ARGV or die "cannot run redis-server: $!\n"' redis-server "$@"
