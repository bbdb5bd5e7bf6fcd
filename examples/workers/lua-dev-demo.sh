#!/usr/bin/env bash
# `make demo`'s Lua Workers part: `dobj-lua dev` serves examples/workers/lua-counter
# on a free port, two requests go through it with curl, then SIGTERM stops it.
# Bounded: the server cannot outlive the script (timeout, trap).
# Usage: examples/workers/lua-dev-demo.sh [path/to/dobj-lua]   (default: build/bin/dobj-lua)
set -euo pipefail
DOBJ_LUA=${1:-build/bin/dobj-lua}
tmp=$(mktemp -d /tmp/dobj-lua-demo.XXXXXX)
mkfifo "$tmp/out"
timeout --foreground -k 5 60 "$DOBJ_LUA" dev --config examples/workers/lua-counter \
  --port 0 --persist-to "$tmp/state" >"$tmp/out" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
exec 3<"$tmp/out"
read -r -t 30 ready <&3 || { echo "dobj-lua dev did not start"; exit 1; }
echo "$ready"
case $ready in *"Ready on http"*) ;; *) cat <&3; exit 1 ;; esac
url=${ready##*Ready on }
for path in /alice /alice; do
  echo "\$ curl $url$path"
  curl -s -m 10 "$url$path"; echo
  read -r -t 10 line <&3 && echo "$line"
done
kill -TERM $pid
cat <&3
wait $pid
