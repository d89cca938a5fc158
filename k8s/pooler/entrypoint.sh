#!/bin/bash
# PgBouncer's auth file from the superuser's password (a Secret, given as the environment),
# written to the pod's memory (the root filesystem is read-only), then PgBouncer in the
# foreground with the configuration the ConfigMap mounts. A `"` in a name or password is
# doubled, as the auth file's format wants.
set -euo pipefail
: "${POOLER_USER:?POOLER_USER is not set}" "${POOLER_PASSWORD:?POOLER_PASSWORD is not set}"
auth_file="${POOLER_AUTH_FILE:-/run/pgbouncer/userlist.txt}"
umask 077
mkdir -p "$(dirname "$auth_file")"
printf '"%s" "%s"\n' "${POOLER_USER//\"/\"\"}" "${POOLER_PASSWORD//\"/\"\"}" >"$auth_file.tmp"
mv "$auth_file.tmp" "$auth_file"
unset POOLER_PASSWORD
exec "${PGBOUNCER:-/usr/sbin/pgbouncer}" "${POOLER_CONFIG:-/etc/pgbouncer-config/pgbouncer.ini}"
