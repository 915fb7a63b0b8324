#!/bin/sh
# First-run setup for `npm start` / `npm test` on a machine that has only Node.js and npm:
# install the npm packages (Bun among them) and build the native library when missing.
set -eu
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/bun ] || [ ! -d node_modules/citty ]; then
	echo "hast: first run: installing npm packages (bun, citty, consola, @iarna/toml)..."
	npm install --no-audit --no-fund --loglevel=error
fi
sh native/build.sh
