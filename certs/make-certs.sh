#!/usr/bin/env bash
# Make the FAKE test PKI for the metadata server's TLS/mTLS listeners. Never trust these certificates.
#
#   certs/make-certs.sh           create whatever is missing or invalid, keep what verifies
#   certs/make-certs.sh --force   throw everything away and start over (new roots, new keys)
#
# Writes into the directory this script lives in, whatever the working directory is.
# Keys: RSA-2048, PKCS#8 PEM. Validity: 20 years.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$dir"

days=7300
all=(root.key root.crt server.key server.crt client.key client.crt
     other-root.key other-root.crt other-client.key other-client.crt)

if [[ "${1:-}" == "--force" ]]; then
  rm -f "${all[@]}"
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--force]" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

serial() { echo "0x7$(openssl rand -hex 15)"; }
newkey() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; chmod 600 "$1"; }

# A leaf is good when it chains to its root, is valid for at least another 30 days, and matches its key.
leaf_ok() { # leaf-base root-base
  [[ -s "$1.crt" && -s "$1.key" ]] &&
    openssl verify -CAfile "$2.crt" "$1.crt" >/dev/null 2>&1 &&
    openssl x509 -in "$1.crt" -noout -checkend 2592000 >/dev/null &&
    [[ "$(openssl x509 -in "$1.crt" -noout -pubkey)" == "$(openssl pkey -in "$1.key" -pubout)" ]]
}

root_ok() { # root-base
  [[ -s "$1.crt" && -s "$1.key" ]] &&
    openssl verify -CAfile "$1.crt" "$1.crt" >/dev/null 2>&1 &&
    openssl x509 -in "$1.crt" -noout -checkend 2592000 >/dev/null &&
    [[ "$(openssl x509 -in "$1.crt" -noout -pubkey)" == "$(openssl pkey -in "$1.key" -pubout)" ]]
}

make_root() { # base "CN"
  local base="$1" cn="$2"
  if root_ok "$base"; then return 1; fi
  echo "creating $base.crt ($cn)"
  newkey "$base.key"
  cat >"$work/$base.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
O = gce-metadata-server tests (FAKE)
CN = $cn
[ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl req -x509 -new -config "$work/$base.cnf" -key "$base.key" -sha256 -days "$days" \
    -set_serial "$(serial)" -out "$base.crt"
  return 0
}

make_leaf() { # base root-base "CN" extendedKeyUsage [subjectAltName] [force]
  local base="$1" root="$2" cn="$3" eku="$4" san="${5:-}" force="${6:-}"
  if [[ -z "$force" ]] && leaf_ok "$base" "$root"; then return; fi
  echo "creating $base.crt ($cn, signed by $root.crt)"
  newkey "$base.key"
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid:always"
    if [[ -n "$san" ]]; then echo "subjectAltName = $san"; fi
  } >"$work/$base.ext"
  openssl req -new -key "$base.key" -subj "/O=gce-metadata-server tests (FAKE)/CN=$cn" -out "$work/$base.csr"
  openssl x509 -req -in "$work/$base.csr" -CA "$root.crt" -CAkey "$root.key" -set_serial "$(serial)" \
    -sha256 -days "$days" -extfile "$work/$base.ext" -out "$base.crt" 2>/dev/null
}

# A new root invalidates everything it signed, so its leaves are re-made too.
fresh=""
if make_root root "gce-metadata-server Test Root CA - FAKE, DO NOT TRUST"; then fresh=1; fi
make_leaf server root "metadata.google.internal" serverAuth \
  "DNS:metadata.google.internal, DNS:localhost, IP:127.0.0.1" "$fresh"
make_leaf client root "gce-metadata-server test client - FAKE" clientAuth "" "$fresh"

fresh=""
if make_root other-root "gce-metadata-server Other Root CA - FAKE, DO NOT TRUST"; then fresh=1; fi
make_leaf other-client other-root "gce-metadata-server untrusted client - FAKE" clientAuth "" "$fresh"

openssl verify -purpose sslserver -CAfile root.crt server.crt
openssl verify -purpose sslclient -CAfile root.crt client.crt
openssl verify -purpose sslclient -CAfile other-root.crt other-client.crt
