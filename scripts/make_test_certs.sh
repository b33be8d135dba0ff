#!/usr/bin/env bash
# Test credentials for a Flower deployment with TLS and SuperNode authentication.
#
#   scripts/make_test_certs.sh [OUT_DIR] [NUM_NODES] [EXTRA_HOSTS]
#
# OUT_DIR (default: ./certificates) receives:
#   ca.crt, ca.key             a self-signed test CA (RSA, $KEY_BITS bits, default 4096; 365 days)
#   server.pem, server.key     the SuperLink's TLS certificate, signed by the CA, valid for
#                              localhost and 127.0.0.1 (plus EXTRA_HOSTS: a comma-separated
#                              list of DNS names or IPs, e.g. "superlink.lan,10.0.0.5")
#   supernode_keys/node_<i>    SuperNode i's private key (ECDSA P-384, OpenSSH format,
#                              for `flower-supernode --auth-supernode-private-key`)
#   supernode_keys/node_<i>.pub its public key (OpenSSH format, for `flwr supernode register`)
#
# For tests and demos only: the keys are unencrypted and the CA is self-made. Production:
# a CA you control (or a public one) for server.pem, and each SuperNode generating its own
# key pair on its own machine, sending only the .pub to the SuperLink operator.
set -euo pipefail

OUT="${1:-certificates}"
NUM_NODES="${2:-3}"
EXTRA_HOSTS="${3:-}"
KEY_BITS="${KEY_BITS:-4096}"   # RSA size of the CA and server keys (tests use 2048: faster)

command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
mkdir -p "$OUT/supernode_keys"
cd "$OUT"

SAN="DNS:localhost,IP:127.0.0.1,IP:::1"
if [[ -n "$EXTRA_HOSTS" ]]; then
  IFS=',' read -ra hosts <<< "$EXTRA_HOSTS"
  for h in "${hosts[@]}"; do
    if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then SAN="$SAN,IP:$h"; else SAN="$SAN,DNS:$h"; fi
  done
fi

# --- CA --------------------------------------------------------------------------------
openssl genrsa -out ca.key "$KEY_BITS" 2>/dev/null
openssl req -new -x509 -key ca.key -sha256 -days 365 -subj "/O=flwr-byz test CA/CN=flwr-byz test CA" \
  -out ca.crt

# --- SuperLink TLS certificate ------------------------------------------------------------
openssl genrsa -out server.key "$KEY_BITS" 2>/dev/null
cat > server.ext <<EOF
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $SAN
EOF
openssl req -new -key server.key -subj "/O=flwr-byz test/CN=localhost" -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -sha256 \
  -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
openssl verify -CAfile ca.crt server.pem >/dev/null

# --- SuperNode authentication keys (ECDSA P-384, OpenSSH format) --------------------------
for i in $(seq 1 "$NUM_NODES"); do
  key="supernode_keys/node_$i"
  rm -f "$key" "$key.pub"
  if command -v ssh-keygen >/dev/null; then
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "flwr-byz-node-$i" -f "$key"
  else
    # No ssh-keygen: openssl makes the P-384 key, Python's `cryptography` (a dependency of
    # flwr) writes it in the OpenSSH format Flower reads.
    openssl ecparam -name secp384r1 -genkey -noout -out "$key.pem"
    PYTHON="${PYTHON:-python3}"
    "$PYTHON" - "$key" <<'PY'
import sys
from cryptography.hazmat.primitives import serialization as s
path = sys.argv[1]
key = s.load_pem_private_key(open(path + ".pem", "rb").read(), None)
open(path, "wb").write(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption()))
open(path + ".pub", "wb").write(key.public_key().public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH) + b"\n")
PY
    rm -f "$key.pem"
  fi
  chmod 600 "$key"
done

chmod 600 ca.key server.key
echo "Wrote $(pwd): ca.crt, server.pem, server.key, supernode_keys/node_{1..$NUM_NODES}[.pub]"
