#!/bin/sh
# Writes deploy/.env, the secrets and addresses deploy/compose.yaml reads, with fresh random
# secrets. Run it once per deployment; it never overwrites an existing file.
#
#   deploy/make-env.sh https://sso.example.org [FILE]
#
# The address is Keycloak's public one (behind your TLS proxy): tokens name it as their issuer.
set -eu

usage() { echo "usage: $0 KEYCLOAK_URL [FILE]  (e.g. $0 https://sso.example.org)" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
url=${1%/}
case $url in
  https://?*|http://?*) ;;
  *) echo "$0: KEYCLOAK_URL must start with https:// (or http:// for a test on one machine)" >&2; exit 2 ;;
esac
file=${2:-$(dirname "$0")/.env}
if [ -e "$file" ]; then
  echo "$0: $file exists; move it away first (its secrets are in use)" >&2
  exit 2
fi

secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
# Kafka's cluster id: 16 random bytes, base64url without padding.
cluster_id() { head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

umask 077
cat > "$file" <<ENV
# reporun's deployment settings (deploy/compose.yaml). Keep this file secret.
KEYCLOAK_URL=$url
POSTGRES_PASSWORD=$(secret)
KEYCLOAK_DB_PASSWORD=$(secret)
KEYCLOAK_ADMIN_PASSWORD=$(secret)
# The realm's client secret for CI systems and autograders (client reporun-service).
REPORUN_SERVICE_SECRET=$(secret)
# The realm's first users, admin and user; change or remove them in Keycloak later.
REPORUN_ADMIN_PASSWORD=$(secret)
REPORUN_USER_PASSWORD=$(secret)
KAFKA_CLUSTER_ID=$(cluster_id)
# REPORUN_QUEUE=sql                 # jobs through PostgreSQL alone (Kafka stays idle)
# REPORUN_PUBLIC_URL=https://reporun.example.org   # the dashboard's address (its sign-in)
# REPORUN_HTTP_PORT=80              # the API's published port
# KEYCLOAK_HTTP_PORT=8080           # Keycloak's
# REPORUN_MIN_WORKERS=1
# REPORUN_MAX_WORKERS=8
# DOCKER_SOCKET=/run/podman/podman.sock   # podman's socket instead of Docker's
ENV
echo "wrote $file"
