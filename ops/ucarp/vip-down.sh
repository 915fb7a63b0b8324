#!/bin/sh
# ucarp --downscript: `vip-down.sh <interface> <vip> [resources]` when this node becomes BACKUP
# (also once at ucarp start without --neutral, and on exit with --shutdown).
exec "$(dirname "$0")/vip.sh" down "$@"
