#!/bin/sh
# ./run.sh [host:port of the metadata server, default 127.0.0.1:8080]
set -eu
# gcp-metadata and google-auth-library read GCE_METADATA_HOST (GCE_METADATA_IP wins if set: leave it unset).
export GCE_METADATA_HOST="${1:-127.0.0.1:8080}"
cd "$(dirname "$0")"
exec node index.mjs
