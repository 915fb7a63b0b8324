#!/bin/sh
# ucarp up/down logic shared by vip-up.sh and vip-down.sh: `vip.sh up|down <interface> <vip>
# [resources]`. ucarp sends no advertisements while a script runs (platform.md 6.1), so this only
# moves the address and starts hast-switch in the background: waiting for the old primary, fsck
# and mount can take minutes. [resources] is ucarp's --xparam, names separated by spaces or
# commas; without it hast-switch uses HAST_RESOURCES or every resource.
#   up:   add the address (and announce it), then `hast-switch primary`
#   down: remove the address first, so clients stop reaching this node, then `hast-switch
#         secondary` (which kills a promotion still running, stops services, unmounts)
set -u
[ $# -ge 3 ] || { echo "usage: vip.sh up|down interface vip [resources]" >&2; exit 64; }
action=$1 iface=$2 vip=$3
resources=$(printf '%s' "${4:-}" | tr ',' ' ')
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
[ -n "$switch" ] || { logger -t hast-ucarp -p user.err "vip-$action: hast-switch not found" 2>/dev/null; exit 1; }

case $action in
up)
	ip -4 addr show dev "$iface" | grep -qF "inet $vip/" || ip addr add "$vip/$VIP_PREFIX" dev "$iface"
	# Tell the switches the address moved (iputils arping; absent elsewhere, then skipped).
	if command -v arping >/dev/null 2>&1; then
		arping -q -U -c 1 -I "$iface" "$vip" >/dev/null 2>&1 &
	fi
	logger -t hast-ucarp -p user.notice "MASTER on $iface for $vip: promoting ${resources:-all resources}" 2>/dev/null
	role=primary
	;;
down)
	ip addr del "$vip/$VIP_PREFIX" dev "$iface" 2>/dev/null
	logger -t hast-ucarp -p user.notice "BACKUP on $iface for $vip: demoting ${resources:-all resources}" 2>/dev/null
	role=secondary
	;;
*)
	echo "vip.sh: first argument must be up or down, not $action" >&2
	exit 64
	;;
esac
# shellcheck disable=SC2086 # a list of names
nohup "$switch" "$role" $resources </dev/null >/dev/null 2>&1 &
exit 0
