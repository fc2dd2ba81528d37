#!/bin/sh
# ./run.sh [host:port of the metadata server, default 127.0.0.1:8080]
# gcloud on a "VM": it finds the account and project on the metadata server and prints tokens from it.
set -eu
server="${1:-127.0.0.1:8080}"
# GCE_METADATA_ROOT for gcloud's own reads; GCE_METADATA_HOST and GCE_METADATA_IP for the tokens it gets through
# google-auth. A fresh configuration directory, so no cached login or configured account wins over the server.
export GCE_METADATA_ROOT="$server" GCE_METADATA_HOST="$server" GCE_METADATA_IP="$server"
export CLOUDSDK_CONFIG="${CLOUDSDK_CONFIG:-$(mktemp -d)}"
printf '{"account":"%s","project":"%s","accessToken":"%s","idToken":"%s"}\n' \
  "$(gcloud config get account 2>/dev/null)" \
  "$(gcloud config get project 2>/dev/null)" \
  "$(gcloud auth print-access-token)" \
  "$(gcloud auth print-identity-token --audiences=https://example.com --token-format=full)"
