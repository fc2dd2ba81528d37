#!/usr/bin/env bash
# Checks the recipes of docs/serving.md for real, inside throwaway network namespaces: a "host" namespace running
# the server on 127.0.0.1:8080 (and on a unix socket), and a "container" namespace routed through it.
# Needs root, iproute2, iptables, socat and curl. Leaves nothing behind.
#
#   sudo scripts/serving-recipes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUN=${BUN:-node_modules/.bin/bun}
H=mds-host-$$ C=mds-ctr-$$ VH=mdsh$$ VC=mdsc$$
SOCK=$(mktemp -u /tmp/mds-recipe-XXXXXX.sock)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$H" 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  rm -f "$SOCK"
}
trap cleanup EXIT
for tool in ip iptables socat curl; do command -v "$tool" >/dev/null || { echo "missing: $tool"; exit 2; }; done

ip netns add "$H"
ip netns add "$C"
ip -n "$H" link set lo up
ip -n "$C" link set lo up
ip link add "$VH" netns "$H" type veth peer name "$VC" netns "$C"
ip -n "$H" addr add 10.99.0.1/24 dev "$VH"
ip -n "$H" link set "$VH" up
ip -n "$C" addr add 10.99.0.2/24 dev "$VC"
ip -n "$C" link set "$VC" up
ip -n "$C" route add default via 10.99.0.1
# The host needs some route to 169.254.169.254 for OUTPUT DNAT to see the packet; a default route is typical.
ip -n "$H" route add default via 10.99.0.2

ip netns exec "$H" "$BUN" src/cli.ts -port :8080 2>/dev/null & pids+=($!)
ip netns exec "$H" "$BUN" src/cli.ts -domainsocket "$SOCK" 2>/dev/null & pids+=($!)
for _ in $(seq 50); do
  ip netns exec "$H" curl -sf -o /dev/null http://127.0.0.1:8080/ && [ -S "$SOCK" ] && break
  sleep 0.1
done

fails=0
check() { # name, namespace, expected, curl args...
  local name=$1 ns=$2 want=$3; shift 3
  local got
  got=$(ip netns exec "$ns" curl -sS --max-time 3 -H 'Metadata-Flavor: Google' "$@" 2>&1 || true)
  if [ "$got" = "$want" ]; then echo "ok    $name"; else echo "FAIL  $name: got ${got:0:120}"; fails=$((fails + 1)); fi
}
URL=http://169.254.169.254/computeMetadata/v1/project/project-id

ip netns exec "$H" iptables -t nat -A OUTPUT -p tcp -d 169.254.169.254 --dport 80 -j DNAT --to-destination 127.0.0.1:8080
check "iptables OUTPUT DNAT: the host's own clients" "$H" example-project "$URL"

ip netns exec "$H" iptables -t nat -A PREROUTING -p tcp -d 169.254.169.254 --dport 80 -j DNAT --to-destination 127.0.0.1:8080
ip netns exec "$H" sysctl -qw "net.ipv4.conf.$VH.route_localnet=1"
check "iptables PREROUTING DNAT + route_localnet: containers" "$C" example-project "$URL"
ip netns exec "$H" iptables -t nat -F

ip -n "$H" addr add 169.254.169.254/32 dev lo
ip netns exec "$H" socat TCP-LISTEN:80,bind=169.254.169.254,fork,reuseaddr TCP:127.0.0.1:8080 & pids+=($!)
ip netns exec "$H" socat TCP-LISTEN:81,bind=169.254.169.254,fork,reuseaddr "UNIX-CONNECT:$SOCK" & pids+=($!)
sleep 0.3
check "socat 169.254.169.254:80 -> 127.0.0.1:8080" "$H" example-project "$URL"
check "socat 169.254.169.254:81 -> unix socket" "$H" example-project http://169.254.169.254:81/computeMetadata/v1/project/project-id
check "metadata.google.internal via a hosts entry (curl --resolve)" "$H" vm-1 \
  --resolve metadata.google.internal:80:169.254.169.254 http://metadata.google.internal/computeMetadata/v1/instance/name

[ "$fails" -eq 0 ] && echo "all recipes work" || { echo "$fails recipe(s) failed"; exit 1; }
