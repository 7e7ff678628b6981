#!/usr/bin/env bash
# Start moto's standalone S3 server for manual runs, or stop it.
#   scripts/s3_server.sh [PORT]   start on 127.0.0.1:PORT (default 5000) and print the export lines
#   scripts/s3_server.sh stop     stop the server started here (by the PID in the pid file)
# Data lives in the server's memory only: stopping it forgets every bucket.
set -euo pipefail
cd "$(dirname "$0")/.."
PID_FILE=/tmp/bootstrapper-s3-server.pid
LOG_FILE=/tmp/bootstrapper-s3-server.log
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

if [ "${1:-}" = "stop" ]; then
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stopped moto server (pid $pid)"
  else
    echo "no moto server running from $PID_FILE"
  fi
  rm -f "$PID_FILE"
  exit 0
fi

PORT=${1:-5000}
case "$PORT" in (*[!0-9]*|'') echo "usage: $0 [PORT] | stop" >&2; exit 2;; esac
if pid=$(running_pid); then
  echo "moto server already running (pid $pid); run '$0 stop' first" >&2
  exit 1
fi

nohup "$PY" -m moto.server -H 127.0.0.1 -p "$PORT" >"$LOG_FILE" 2>&1 &
echo $! >"$PID_FILE"
URL="http://127.0.0.1:$PORT"
for _ in $(seq 150); do
  if "$PY" -c "import sys, urllib.request, urllib.error
try: urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError: pass
except OSError: sys.exit(1)" "$URL" 2>/dev/null; then
    echo "moto server on $URL (pid $(cat "$PID_FILE"), log $LOG_FILE)"
    echo "export AWS_ENDPOINT_URL=$URL AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
    exit 0
  fi
  kill -0 "$(cat "$PID_FILE")" 2>/dev/null || break
  sleep 0.2
done
echo "moto server failed to start; see $LOG_FILE" >&2
tail -n 20 "$LOG_FILE" >&2 || true
pid=$(cat "$PID_FILE"); kill "$pid" 2>/dev/null || true
rm -f "$PID_FILE"
exit 1
