# Shared by scripts/quickstart and scripts/serve: start polar-worker and
# polar-gateway, wait until they are listening and the gateway has a ready
# worker, and stop them. Source it; it defines functions only.

# start_worker MODEL LISTEN METRICS LOG [FLAGS...]: starts a worker in the
# background; sets WORKER_PID, WORKER_GRPC, WORKER_METRICS.
start_worker() {
  "$POLAR_BIN/polar-worker" --model "$1" --listen "$2" --metrics-listen "$3" "${@:5}" >"$4" 2>&1 &
  WORKER_PID=$!
  wait_for_line "$4" "polar-worker listening" "$WORKER_PID" || return 1
  WORKER_GRPC=$(sed -n 's/.*polar-worker listening grpc=\([^ ]*\) metrics=.*/\1/p' "$4" | head -1)
  WORKER_METRICS=$(sed -n 's/.*polar-worker listening grpc=[^ ]* metrics=\([^ ]*\).*/\1/p' "$4" | head -1)
}

# start_gateway WORKERS LISTEN METRICS LOG: sets GATEWAY_PID, GATEWAY_GRPC,
# GATEWAY_METRICS, and waits until the gateway reports a ready worker.
start_gateway() {
  "$POLAR_BIN/polar-gateway" --workers "$1" --listen "$2" --metrics-listen "$3" >"$4" 2>&1 &
  GATEWAY_PID=$!
  wait_for_line "$4" "polar-gateway listening" "$GATEWAY_PID" || return 1
  GATEWAY_GRPC=$(sed -n 's/.*polar-gateway listening grpc=\([^ ]*\) metrics=.*/\1/p' "$4" | head -1)
  GATEWAY_METRICS=$(sed -n 's/.*polar-gateway listening grpc=[^ ]* metrics=\([^ ]*\).*/\1/p' "$4" | head -1)
  local i
  for i in $(seq 1 600); do
    if curl -fsS "http://$GATEWAY_METRICS/metrics" 2>/dev/null | grep -Eq '^polar_workers_ready [1-9]'; then
      return 0
    fi
    kill -0 "$GATEWAY_PID" 2>/dev/null || { echo "polar-gateway exited; see $4" >&2; return 1; }
    sleep 0.2
  done
  echo "no worker became ready within 120 s; see $4" >&2
  return 1
}

# wait_for_line FILE TEXT PID: waits up to 120 s for TEXT to appear in FILE.
wait_for_line() {
  local i
  for i in $(seq 1 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "process $3 exited; its log $1:" >&2; tail -20 "$1" >&2; return 1; }
    sleep 0.2
  done
  echo "timed out waiting for '$2' in $1" >&2
  return 1
}

# stop_services: SIGTERM (drain) both, then wait for them.
stop_services() {
  [ -z "${GATEWAY_PID:-}" ] || kill -TERM "$GATEWAY_PID" 2>/dev/null || true
  [ -z "${WORKER_PID:-}" ] || kill -TERM "$WORKER_PID" 2>/dev/null || true
  [ -z "${GATEWAY_PID:-}" ] || wait "$GATEWAY_PID" 2>/dev/null || true
  [ -z "${WORKER_PID:-}" ] || wait "$WORKER_PID" 2>/dev/null || true
  GATEWAY_PID= WORKER_PID=
}
