#!/usr/bin/env bash
# Prepares a Strata checkout: Node dependencies (only when missing or out of date), the
# nats-server binary (arguments are passed on to ensure-nats-server.sh), then a build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# npm ci writes node_modules/.package-lock.json; an older one means package-lock.json changed.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci
fi
bash scripts/ensure-nats-server.sh "$@"
npm run build
