#!/bin/sh
# ucarp --upscript: `vip-up.sh <interface> <vip> [resources]` when this node becomes MASTER.
exec "$(dirname "$0")/vip.sh" up "$@"
