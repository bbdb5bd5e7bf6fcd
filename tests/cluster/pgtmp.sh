#!/bin/bash
# A throw-away PostgreSQL for tests (the C, Python and Lua suites all use it).
#
#   pgtmp.sh start         initdb + start in a new temporary folder; prints
#                          "URL DIR" on one line.  A watchdog stops the server
#                          and removes DIR as soon as the last writer of the
#                          lifeline DIR/lifeline closes it: a test opens it for
#                          writing right after start, so that the server goes
#                          away with the test however the test ends (a crash
#                          or SIGKILL included), without polling.
#   pgtmp.sh stop DIR      stop at once and remove DIR (idempotent).
#   pgtmp.sh kill DIR      SIGKILL the postmaster and its backends (fault
#                          tests); returns once they are gone.
#   pgtmp.sh restart DIR   start it again on the same port after a kill.
#
# As root the server runs as the `postgres` user (initdb refuses root).
# Ports are drawn from DOBJ_PG_PORTS (default 18750-18799), never one a live
# folder of this script holds (its server may be down between kill and
# restart).  Every wait is bounded (pg_ctl -t, the kill's 30 s).
set -u
# A sanitizer runtime preloaded into the test (make sanitize) is not for the
# server: its leak report would fail pg_config, initdb and postgres.
unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS PYTHONMALLOC
# Hold no descriptor of the caller's (a test's lifeline above all): the
# server started here would keep it open for ever.
for fd in $(ls /proc/$$/fd); do
	[ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
done
BIN=$(pg_config --bindir 2>/dev/null) || { echo "pgtmp: pg_config not found (Debian: libpq-dev, postgresql)" >&2; exit 2; }
[ -x "$BIN/initdb" ] || BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)
[ -x "$BIN/initdb" ] || { echo "pgtmp: initdb not found (Debian: postgresql)" >&2; exit 2; }
AS=()
[ "$(id -u)" = 0 ] && AS=(runuser -u postgres --)

pgctl_start() { # DIR PORT
	"${AS[@]}" "$BIN/pg_ctl" -D "$1/data" -l "$1/pg.log" -w -t 30 -o \
	  "-c listen_addresses=127.0.0.1 -p $2 -k $1 -c idle_in_transaction_session_timeout=2s -c fsync=on" \
	  start >/dev/null
}

do_stop() { # DIR
	local d=$1
	[ -d "$d/data" ] && "${AS[@]}" "$BIN/pg_ctl" -D "$d/data" -m immediate -w -t 30 stop >/dev/null 2>&1
	# A watchdog still waiting for its first writer is let go.
	if [ -p "$d/lifeline" ]; then exec 3<>"$d/lifeline"; exec 3>&-; fi
	rm -rf "$d"
}

case "${1:-}" in
start)
	d=$(mktemp -d /tmp/dobj-pg.XXXXXX) || exit 1
	chmod 755 "$d"
	[ ${#AS[@]} -gt 0 ] && chown postgres "$d"
	if ! "${AS[@]}" "$BIN/initdb" -D "$d/data" -U dobj -A trust -E UTF8 --locale=C --no-sync >"$d/initdb.log" 2>&1; then
		cat "$d/initdb.log" >&2; rm -rf "$d"; exit 1
	fi
	range=${DOBJ_PG_PORTS:-18750-18799}
	lo=${range%-*}; hi=${range#*-}
	# The ports of the other folders: a killed server's port stays its own
	# until its restart (another start that took it made the restart fail).
	held=" $(cat /tmp/dobj-pg.*/port 2>/dev/null | tr '\n' ' ') "
	port=
	for _ in 1 2 3 4 5 6 7 8 9 10 11 12; do
		p=$((lo + RANDOM % (hi - lo + 1)))
		[[ $held == *" $p "* ]] && continue
		if pgctl_start "$d" "$p"; then port=$p; break; fi
	done
	if [ -z "$port" ]; then
		echo "pgtmp: PostgreSQL did not start:" >&2; tail -5 "$d/pg.log" >&2
		do_stop "$d"; exit 1
	fi
	echo "$port" >"$d/port"
	mkfifo "$d/lifeline"
	# The watchdog, in a session of its own: a caller that kills its whole
	# process group (a timed-out make, a job control kill) must not take the
	# watchdog with it and leave the server running.
	setsid bash "$0" watch "$d" </dev/null >/dev/null 2>&1 &
	echo "postgresql://dobj@127.0.0.1:$port/postgres $d"
	;;
stop) do_stop "$2" ;;
watch)
	# Blocks until every writer of the lifeline closed it.
	cat "$2/lifeline" >/dev/null
	do_stop "$2"
	;;
kill)
	# The postmaster and its backends at once (as a machine losing power
	# would); its shared memory goes with the last of them.
	pid=$(head -1 "$2/data/postmaster.pid" 2>/dev/null) || exit 0
	kids=$(ps -o pid= --ppid "$pid")
	kill -9 "$pid" $kids 2>/dev/null
	# SIGKILL is only sent: a restart right away found the port still bound
	# or the shared memory still attached (its pg_ctl start failed under
	# load).  Wait until each process has exited, as its pidfd tells.
	python3 - "$pid" $kids <<'EOF'
import os, select, sys
poll, left = select.poll(), 0
for pid in sys.argv[1:]:
    try:
        poll.register(os.pidfd_open(int(pid)), select.POLLIN)
        left += 1
    except ProcessLookupError:
        pass  # gone already
while left > 0:
    ready = poll.poll(30000)
    if not ready:
        sys.exit("pgtmp: the killed PostgreSQL processes did not exit within 30 s")
    for fd, _ in ready:
        poll.unregister(fd)
        left -= 1
EOF
	;;
restart)
	rm -f "$2/data/postmaster.pid" "$2"/.s.PGSQL.*.lock
	pgctl_start "$2" "$(cat "$2/port")" || { tail -5 "$2/pg.log" >&2; exit 1; }
	;;
*) echo "usage: pgtmp.sh start | stop DIR | kill DIR | restart DIR" >&2; exit 2 ;;
esac
