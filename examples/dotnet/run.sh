#!/bin/sh
# ./run.sh [host:port of the metadata server, default 127.0.0.1:8080]
set -eu
# Google.Apis.Auth's ComputeCredential reads GCE_METADATA_HOST (Google.Api.Gax also accepts METADATA_EMULATOR_HOST).
export GCE_METADATA_HOST="${1:-127.0.0.1:8080}"
cd "$(dirname "$0")"
exec dotnet run
