#!/bin/sh
# ucarp --downscript: called as `vip-down.sh <interface> <vip> [resources]` when this node
# becomes BACKUP (also once at ucarp start without --neutral, and on exit with --shutdown).
# Removes the address first, so clients stop reaching this node, then demotes in the
# background: hast-switch kills a promotion still running, stops services, unmounts and
# switches the resources to secondary.
set -u
[ $# -ge 2 ] || { echo "usage: vip-down.sh interface vip [resources]" >&2; exit 64; }
iface=$1 vip=$2
resources=$(printf '%s' "${3:-}" | tr ',' ' ')
CONF=${HAST_SWITCH_CONF:-/etc/hast-switch.conf}
if [ -r "$CONF" ]; then
	# shellcheck source=/dev/null
	. "$CONF"
fi
VIP_PREFIX=${VIP_PREFIX:-32}

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
[ -n "$switch" ] || { logger -t hast-ucarp -p user.err "vip-down: hast-switch not found" 2>/dev/null; exit 1; }

ip addr del "$vip/$VIP_PREFIX" dev "$iface" 2>/dev/null
logger -t hast-ucarp -p user.notice "BACKUP on $iface for $vip: demoting ${resources:-all resources}" 2>/dev/null
# shellcheck disable=SC2086 # a list of names
nohup "$switch" secondary $resources </dev/null >/dev/null 2>&1 &
exit 0
