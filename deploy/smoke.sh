#!/usr/bin/env bash
# Container smoke test: build the image, start compose.yaml with two workers, post signed webhooks, stop one worker
# with SIGTERM in the middle, and check that every email is in PostgreSQL exactly once. Always tears down.
#   deploy/smoke.sh            (needs podman + podman-compose: ../shared/containers/prepare.sh sets them up here)
set -euo pipefail
cd "$(dirname "$0")/.."
PC=${PODMAN_COMPOSE:-podman-compose}
PROJECT=mailroom_smoke
PORT=${SMOKE_PORT:-18080}
PROM_PORT=${SMOKE_PROMETHEUS_PORT:-19090}
COUNT=${SMOKE_WEBHOOKS:-400}
export MAILROOM_PUBLISH_PORT=$PORT MAILROOM_PROMETHEUS_PORT=$PROM_PORT
export MAILROOM_WEBHOOK_SECRETS=smoke-webhook-secret-1 MAILROOM_ADMIN_TOKEN=smoke-admin-token-0001
export MAILROOM_ACTIONS_DRY_RUN=true POSTGRES_PASSWORD=smoke REDIS_PASSWORD=smoke-redis-password

PROFILES=(--profile monitoring)
# SMOKE_PGBOUNCER=1: the API and workers reach PostgreSQL through the `pgbouncer` profile's PgBouncer.
if [ "${SMOKE_PGBOUNCER:-}" = "1" ]; then
  export MAILROOM_DB_HOST=pgbouncer MAILROOM_DB_PORT=6432 MAILROOM_DATABASE_PGBOUNCER=true
  PROFILES+=(--profile pgbouncer)
fi

compose() { "$PC" "${PROFILES[@]}" -f compose.yaml -p "$PROJECT" "$@"; }
cleanup() {
  echo "--- teardown"
  compose down -v -t 15 >/dev/null 2>&1 || true
}
trap cleanup EXIT

started=$(date +%s)
echo "--- build"
podman build -q --format docker -f deploy/Dockerfile -t localhost/mailroom:latest . >/dev/null
if [ "${SMOKE_PGBOUNCER:-}" = "1" ]; then
  podman build -q --format docker -t localhost/mailroom-pgbouncer:latest deploy/pgbouncer >/dev/null
fi
built=$(date +%s)
echo "image built in $((built - started)) s: $(podman image inspect localhost/mailroom:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

echo "--- up (two workers, and Prometheus: the monitoring profile)"
compose up -d >/dev/null 2>&1
python3 deploy/smoke_driver.py \
  --url "http://127.0.0.1:$PORT" --secret smoke-webhook-secret-1 --token smoke-admin-token-0001 --count "$COUNT" \
  --psql "podman exec ${PROJECT}_postgres_1 psql -U mailroom -d mailroom -tA -c" \
  --stop-worker "podman stop -t 30 ${PROJECT}_worker_1"
echo "--- Prometheus scraping mailroom, with the alert rules loaded"
python3 - "$PROM_PORT" <<'PY'
import json, sys, time, urllib.parse, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def get(path):
    with urllib.request.urlopen(base + path, timeout=5) as answer:
        return json.load(answer)["data"]
deadline = time.monotonic() + 90
while True:
    try:
        targets = get("/api/v1/targets")["activeTargets"]
        query = urllib.parse.quote("sum(mailroom_webhooks_total)")
        stored = get(f"/api/v1/query?query={query}")["result"]
        rules = [r for g in get("/api/v1/rules")["groups"] for r in g["rules"]]
        scraped = [t["health"] for t in targets] == ["up"] and stored and float(stored[0]["value"][1]) > 0
        if scraped and len(rules) == 9 and all(r["health"] == "ok" for r in rules):
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("Prometheus never scraped mailroom's webhook counts, or its 9 alert rules did not all evaluate ok")
    time.sleep(1)
print(f"prometheus: target {targets[0]['scrapeUrl']} up; sum(mailroom_webhooks_total) = {stored[0]['value'][1]}; "
      f"{len(rules)} alert rules loaded, all evaluating ok")
PY
if [ "${SMOKE_PGBOUNCER:-}" = "1" ]; then
  echo "--- through PgBouncer: its clients and the errors it logged"
  podman logs "${PROJECT}_pgbouncer_1" 2>&1 | grep -c "login attempt" | sed 's/^/pgbouncer logins: /'
  errors=$(podman logs "${PROJECT}_pgbouncer_1" 2>&1 | grep -E " (ERROR|FATAL) " || true)
  if [ -n "$errors" ]; then
    echo "$errors" | head -5
    exit 1
  fi
fi
echo "--- worker logs after SIGTERM"
podman logs --tail 3 "${PROJECT}_worker_1" 2>&1 | cut -c1-200
echo "smoke test passed in $(( $(date +%s) - started )) s"
