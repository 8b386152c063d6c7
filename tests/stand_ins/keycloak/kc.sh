#!/bin/bash
# `kc.sh start --import-realm` as the stand-in: the realm from /opt/keycloak/data/import, the
# issuer at KC_HOSTNAME, and the settings Keycloak would refuse to start without checked as it
# would: its database (reached, as Keycloak must reach it before it is ready), HTTP enabled
# behind a TLS proxy, the health endpoints on. Back-channel addresses (discovery, keys, token)
# follow the request's host only with KC_HOSTNAME_BACKCHANNEL_DYNAMIC=true, as in Keycloak.
set -euo pipefail
[ "${1:-}" = start ] || { echo "the stand-in runs 'start' only" >&2; exit 1; }
: "${KC_HOSTNAME:?KC_HOSTNAME must name the public address}"
[ "${KC_DB:-}" = postgres ] || { echo "KC_DB must be postgres" >&2; exit 1; }
: "${KC_DB_USERNAME:?}" "${KC_DB_PASSWORD:?}"
[ "${KC_HTTP_ENABLED:-}" = true ] || { echo "HTTP is off (KC_HTTP_ENABLED)" >&2; exit 1; }
[ "${KC_HEALTH_ENABLED:-}" = true ] || { echo "no health endpoints (KC_HEALTH_ENABLED)" >&2; exit 1; }
# jdbc:postgresql://HOST:PORT/DB
address=${KC_DB_URL:?}
address=${address#jdbc:postgresql://}
address=${address%%/*}
host=${address%%:*}
port=${address##*:}
[ "$port" != "$address" ] || port=5432
for _ in $(seq 60); do
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
  sleep 1
done
(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null || { echo "the database $host:$port is not reachable" >&2; exit 1; }
dynamic=()
[ "${KC_HOSTNAME_BACKCHANNEL_DYNAMIC:-false}" = true ] && dynamic=(--backchannel-dynamic)
realm=$(ls /opt/keycloak/data/import/*.json | head -n 1)
exec node /opt/stand-in/server.js --port 8080 --host 0.0.0.0 --issuer-url "$KC_HOSTNAME" \
  --realm-file "$realm" --health-port 9000 "${dynamic[@]}"
