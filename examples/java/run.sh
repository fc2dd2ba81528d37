#!/bin/sh
# ./run.sh [host:port of the metadata server, default 127.0.0.1:8080]
# Needs google-auth-library-oauth2-http and its dependencies on CLASSPATH (Debian: libgoogle-auth-java puts them in
# /usr/share/java, the default here); Java 11+ runs the source file directly.
set -eu
# ComputeEngineCredentials reads GCE_METADATA_HOST for its probe, tokens and account.
export GCE_METADATA_HOST="${1:-127.0.0.1:8080}"
cd "$(dirname "$0")"
exec java -cp "${CLASSPATH:-/usr/share/java/*}" Main.java
