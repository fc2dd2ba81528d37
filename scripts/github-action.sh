#!/usr/bin/env bash
# The composite action's logic (action.yml): start the metadata server in the background for the rest of the job
# and export GCE_METADATA_HOST, GCE_METADATA_IP and GCE_METADATA_ROOT (host:port) through $GITHUB_ENV.
#
# Inputs arrive as environment variables (action.yml maps them):
#   INPUT_CONFIG_FILE  metadata config file (-configFile); empty: the bundled example VM
#   INPUT_PORT         port to listen on (default 8080; 0 picks a free one)
#   INPUT_FLAGS        extra flags, split on whitespace (e.g. "-controlAPI -v 1")
#   INPUT_RELEASE      a release tag (e.g. v0.1.0): run that release's Linux executable, verified against its
#                      SHA256SUMS; empty: run the action's own checkout from source (npm ci, then Bun)
# Also read: GITHUB_ACTION_PATH (the action's checkout), GITHUB_ACTION_REPOSITORY (where releases are),
# GCE_METADATA_SERVER_RELEASE_URL (releases' base URL, default https://github.com/<repository>/releases/download),
# RUNNER_TEMP (where the log and a downloaded executable go).
# Exports besides the three variables: GCE_METADATA_SERVER_PID (kill it to stop the server early; the runner
# stops it at the end of the job) and GCE_METADATA_SERVER_LOG. Outputs: url, host, pid, log.
set -euo pipefail

fail() {
  echo "::error::gce-metadata-server: $*" >&2
  exit 1
}

action_path="${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/.." && pwd)}"
temp="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/gce-metadata-server"
mkdir -p "$temp"
port="${INPUT_PORT:-8080}"
[[ "$port" =~ ^[0-9]+$ ]] || fail "port must be a number, got \"$port\""
[ -n "${GITHUB_ENV:-}" ] || fail "GITHUB_ENV is not set: run this as a GitHub Actions step"

if [ -n "${INPUT_RELEASE:-}" ]; then
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) asset=gce_metadata_server-linux-x64 ;;
    Linux-aarch64 | Linux-arm64) asset=gce_metadata_server-linux-arm64 ;;
    *) fail "no release executable for $(uname -s) $(uname -m); leave 'release' empty to run from source" ;;
  esac
  repo="${GITHUB_ACTION_REPOSITORY:-}"
  base="${GCE_METADATA_SERVER_RELEASE_URL:-https://github.com/${repo}/releases/download}"
  dir="$temp/$INPUT_RELEASE"
  mkdir -p "$dir"
  for f in "$asset" SHA256SUMS; do
    curl -fsSL --retry 3 -o "$dir/$f" "$base/$INPUT_RELEASE/$f" || fail "could not download $base/$INPUT_RELEASE/$f"
  done
  (cd "$dir" && grep -E "  $asset\$" SHA256SUMS | sha256sum -c --quiet -) >&2 ||
    fail "$asset does not match the release's SHA256SUMS; not running it"
  chmod +x "$dir/$asset"
  cmd=("$dir/$asset")
else
  if [ ! -x "$action_path/node_modules/.bin/bun" ]; then
    (cd "$action_path" && npm ci --no-audit --no-fund >&2) || fail "npm ci in $action_path failed"
  fi
  cmd=("$action_path/node_modules/.bin/bun" "$action_path/src/cli.ts")
fi

args=(-port ":$port")
if [ -n "${INPUT_CONFIG_FILE:-}" ]; then
  [ -f "$INPUT_CONFIG_FILE" ] || fail "config-file \"$INPUT_CONFIG_FILE\" does not exist"
  args+=(-configFile "$(realpath "$INPUT_CONFIG_FILE")")
fi
set -f # split the flags on whitespace, never glob them
# shellcheck disable=SC2206
args+=(${INPUT_FLAGS:-})
set +f

log="$temp/server.log"
# From an empty directory: no stray ./config.json is picked up when no config file is given.
mkdir -p "$temp/cwd"
(cd "$temp/cwd" && exec nohup "${cmd[@]}" "${args[@]}" >"$log" 2>&1 </dev/null) &
pid=$!

url=""
for _ in $(seq 1 300); do
  url=$(sed -n 's/.*metadata server listening url=\(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  cat "$log" >&2
  kill "$pid" 2>/dev/null || true
  fail "the server did not start (its log is above)"
fi
host="${url#http://}"

{
  echo "GCE_METADATA_HOST=$host"
  echo "GCE_METADATA_IP=$host"
  echo "GCE_METADATA_ROOT=$host"
  echo "GCE_METADATA_SERVER_PID=$pid"
  echo "GCE_METADATA_SERVER_LOG=$log"
} >>"$GITHUB_ENV"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  {
    echo "url=$url"
    echo "host=$host"
    echo "pid=$pid"
    echo "log=$log"
  } >>"$GITHUB_OUTPUT"
fi
echo "gce-metadata-server listening at $url (pid $pid, log $log); GCE_METADATA_HOST, GCE_METADATA_IP and GCE_METADATA_ROOT are set for the next steps"
