#!/bin/sh
# ./run.sh [host:port of the metadata server, default 127.0.0.1:8080]
set -eu
server="${1:-127.0.0.1:8080}"
# Reads go to GCE_METADATA_HOST (google-auth 2.x) or, if unset, GCE_METADATA_ROOT (every version, Debian's 1.5 too);
# the "am I on GCE?" probe goes to GCE_METADATA_IP.
export GCE_METADATA_ROOT="$server" GCE_METADATA_IP="$server"
cd "$(dirname "$0")"
exec "${PYTHON:-python3}" main.py
