#!/bin/sh
# Installs BullMQ (npm, pinned in package.json) for the jobs-throughput benchmark into the
# git-ignored directory <workspace>/.wharf/node/bullmq-bench. Needs Node 20 and npm.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
dest="${WHARF_BULLMQ_DIR:-$root/.wharf/node/bullmq-bench}"
mkdir -p "$dest"
cp "$here/package.json" "$here/bench.mjs" "$dest/"
cd "$dest"
npm install --no-audit --no-fund --loglevel=error
echo "BullMQ installed in $dest"
