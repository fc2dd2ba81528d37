#!/bin/sh
# ./run.sh [host:port of the metadata server, default 127.0.0.1:8080]
set -eu
# cloud.google.com/go/compute/metadata (and through it oauth2/google and idtoken) read GCE_METADATA_HOST; it also
# makes metadata.OnGCE() true without probing.
export GCE_METADATA_HOST="${1:-127.0.0.1:8080}"
cd "$(dirname "$0")"
exec go run .
