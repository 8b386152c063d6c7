#!/bin/bash
# `kc.sh start --import-realm` as the stand-in: the realm from /opt/keycloak/data/import, the
# issuer at KC_HOSTNAME. (Keycloak's other KC_* settings have nothing to do here.)
set -euo pipefail
realm=$(ls /opt/keycloak/data/import/*.json | head -n 1)
exec node /opt/stand-in/server.js --port 8080 --host 0.0.0.0 \
  --issuer-url "${KC_HOSTNAME:?KC_HOSTNAME must name the public address}" \
  --realm-file "$realm" --health-port 9000
