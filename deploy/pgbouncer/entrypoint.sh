#!/bin/sh
# Writes PgBouncer's configuration from the environment (into /tmp: the container's root is read-only), then runs it.
set -eu
: "${PGBOUNCER_USER:?set PGBOUNCER_USER}" "${PGBOUNCER_PASSWORD:?set PGBOUNCER_PASSWORD}"
umask 077
cat > /tmp/pgbouncer.ini <<CONF
[databases]
* = host=${PGBOUNCER_BACKEND_HOST:-postgres} port=${PGBOUNCER_BACKEND_PORT:-5432}
[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir =
auth_type = scram-sha-256
auth_file = /tmp/userlist.txt
pool_mode = transaction
default_pool_size = ${PGBOUNCER_POOL_SIZE:-20}
max_client_conn = ${PGBOUNCER_MAX_CLIENT_CONN:-1000}
CONF
printf '"%s" "%s"\n' "$PGBOUNCER_USER" "$PGBOUNCER_PASSWORD" > /tmp/userlist.txt
exec pgbouncer /tmp/pgbouncer.ini
