#!/bin/sh
# ucarp --upscript: called as `vip-up.sh <interface> <vip> [resources]` when this node becomes
# MASTER. ucarp sends no advertisements while a script runs (platform.md 6.1), so this only
# configures the address and starts hast-switch in the background: the wait for the old
# primary, fsck and mount can take minutes. [resources] is ucarp's --xparam, names separated
# by spaces or commas; without it hast-switch uses HAST_RESOURCES or every resource.
set -u
[ $# -ge 2 ] || { echo "usage: vip-up.sh interface vip [resources]" >&2; exit 64; }
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
[ -n "$switch" ] || { logger -t hast-ucarp -p user.err "vip-up: hast-switch not found" 2>/dev/null; exit 1; }

ip -4 addr show dev "$iface" | grep -q "inet $vip/" || ip addr add "$vip/$VIP_PREFIX" dev "$iface"
# Tell the switches the address moved (iputils arping; absent elsewhere, then skipped).
if command -v arping >/dev/null 2>&1; then
	arping -q -U -c 1 -I "$iface" "$vip" >/dev/null 2>&1 &
fi
logger -t hast-ucarp -p user.notice "MASTER on $iface for $vip: promoting ${resources:-all resources}" 2>/dev/null
# shellcheck disable=SC2086 # a list of names
nohup "$switch" primary $resources </dev/null >/dev/null 2>&1 &
exit 0
