#!/usr/bin/env bash
# Container smoke test: build the image, start compose.yaml with two workers, post signed webhooks, stop one worker
# with SIGTERM in the middle, and check that every email is in PostgreSQL exactly once. Always tears down.
#   deploy/smoke.sh            (needs podman + podman-compose: ../shared/containers/prepare.sh sets them up here)
set -euo pipefail
cd "$(dirname "$0")/.."
PC=${PODMAN_COMPOSE:-podman-compose}
PROJECT=mailroom_smoke
PORT=${SMOKE_PORT:-18080}
COUNT=${SMOKE_WEBHOOKS:-400}
export MAILROOM_PUBLISH_PORT=$PORT MAILROOM_WEBHOOK_SECRETS=smoke-secret MAILROOM_ADMIN_TOKEN=smoke-token
export MAILROOM_ACTIONS_DRY_RUN=true POSTGRES_PASSWORD=smoke

compose() { "$PC" -f compose.yaml -p "$PROJECT" "$@"; }
cleanup() {
  echo "--- teardown"
  compose down -v -t 15 >/dev/null 2>&1 || true
}
trap cleanup EXIT

started=$(date +%s)
echo "--- build"
podman build -q --format docker -f deploy/Dockerfile -t localhost/mailroom:latest . >/dev/null
built=$(date +%s)
echo "image built in $((built - started)) s: $(podman image inspect localhost/mailroom:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

echo "--- up (two workers)"
compose up -d >/dev/null 2>&1
python3 deploy/smoke_driver.py \
  --url "http://127.0.0.1:$PORT" --secret smoke-secret --token smoke-token --count "$COUNT" \
  --psql "podman exec ${PROJECT}_postgres_1 psql -U mailroom -d mailroom -tA -c" \
  --stop-worker "podman stop -t 30 ${PROJECT}_worker_1"
echo "--- worker logs after SIGTERM"
podman logs --tail 3 "${PROJECT}_worker_1" 2>&1 | cut -c1-200
echo "smoke test passed in $(( $(date +%s) - started )) s"
