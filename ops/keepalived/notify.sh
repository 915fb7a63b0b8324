#!/bin/sh
# keepalived `notify` script: called as `notify.sh INSTANCE|GROUP <name> <state> [priority]`
# on every VRRP state change. keepalived configures the address itself; this maps the state
# to hast-switch and returns at once (the switch runs in the background, serialized by its
# lock; a demotion stops a promotion still running):
#   MASTER -> hast-switch primary     BACKUP, FAULT, STOP -> hast-switch secondary
# The resources are HAST_RESOURCES from /etc/hast-switch.conf (default: all of them):
# keepalived passes no argument of ours to a `notify` script.
set -u
[ $# -ge 3 ] || { echo "usage: notify.sh INSTANCE|GROUP name MASTER|BACKUP|FAULT|STOP [priority]" >&2; exit 64; }
kind=$1 name=$2 state=$3

switch=${HAST_SWITCH:-}
if [ -z "$switch" ]; then
	here=$(dirname "$0")
	for candidate in "$here/hast-switch" "$here/../switch/hast-switch" /usr/local/sbin/hast-switch; do
		if [ -x "$candidate" ]; then
			switch=$candidate
			break
		fi
	done
fi
[ -n "$switch" ] || { logger -t hast-keepalived -p user.err "notify: hast-switch not found" 2>/dev/null; exit 1; }

case $state in
MASTER) role=primary ;;
BACKUP | FAULT | STOP) role=secondary ;;
*)
	logger -t hast-keepalived -p user.warning "notify: $kind $name: ignoring state $state" 2>/dev/null
	exit 0
	;;
esac
logger -t hast-keepalived -p user.notice "$kind $name is $state: hast-switch $role" 2>/dev/null
nohup "$switch" "$role" </dev/null >/dev/null 2>&1 &
exit 0
