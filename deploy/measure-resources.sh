#!/usr/bin/env bash
# Measure graphguard's memory (RSS) and CPU, idle and under load, to size the Kubernetes
# requests and limits in deploy/kustomize (figures quoted in deploy/README.md).
#
#   sudo deploy/measure-resources.sh [BINARY]      # default: target/release/graphguard
#
# Everything runs inside a network namespace made for the run (loopback only): nginx plays a
# trivial agent server on 127.0.0.1:8000, graphguard listens on 127.0.0.1:8080 with
# policies/owner, and wrk drives it. Needs root (ip netns), wrk and nginx (Debian: wrk,
# nginx-light). Bounded: three 20-second load phases and two large-body bursts.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$(realpath "${1:-$REPO/target/release/graphguard}")"
DUR="${DUR:-20}"
NS="ggmeasure-$$"
WORK="$(mktemp -d)"
cleanup() {
    [[ -n "${GG_PID:-}" ]] && kill "$GG_PID" 2>/dev/null || true
    [[ -f "$WORK/nginx.pid" ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS"
in_ns ip link set lo up

THREAD='{"thread_id":"00000000-0000-4000-8000-000000000000","created_at":"2025-01-01T00:00:00+00:00","updated_at":"2025-01-01T00:00:00+00:00","metadata":{"owner":"alice"},"status":"idle","config":{},"values":{},"interrupts":{}}'
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    client_max_body_size 64m;
    keepalive_requests 1000000;
    default_type application/json;
    server {
        listen 127.0.0.1:8000;
        location = /ok { return 200 '{"ok":true}'; }
        location = /threads/search { return 200 '[]'; }
        location = /threads { return 200 '$THREAD'; }
        location ~ ^/threads/[0-9a-f-]+\$ { return 200 '$THREAD'; }
        location / { return 404 '{"detail":"Not Found"}'; }
    }
}
NGINX
in_ns nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err"

nsenter --net="/var/run/netns/$NS" "$BIN" serve --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9091 \
    --upstream http://127.0.0.1:8000 --policies "$REPO/policies/owner" 2>"$WORK/gg.log" &
GG_PID=$!
for _ in $(seq 1 50); do
    in_ns curl -sf http://127.0.0.1:9091/readyz >/dev/null 2>&1 && break
    sleep 0.2
done
in_ns curl -sf http://127.0.0.1:9091/readyz >/dev/null || { echo "graphguard did not become ready" >&2; cat "$WORK/gg.log" >&2; exit 1; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$GG_PID/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$GG_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$GG_PID/stat"; }
HZ="$(getconf CLK_TCK)"
report() { printf '%-34s RSS %6.1f MiB   peak (VmHWM) %6.1f MiB\n' "$1" "$(echo "$(rss_kib)/1024" | bc -l)" "$(echo "$(hwm_kib)/1024" | bc -l)"; }

# Smoke: every request of the load mix is authorised and answered 200 through graphguard.
smoke() { # METHOD PATH [BODY]
    local code
    code="$(in_ns curl -s -o /dev/null -w '%{http_code}' -X "$1" -H 'authorization: Bearer alice-demo-key' \
        -H 'content-type: application/json' ${3:+--data "$3"} "http://127.0.0.1:8080$2")"
    [[ "$code" == 200 ]] || { echo "smoke $1 $2: $code" >&2; cat "$WORK/gg.log" >&2; exit 1; }
}
smoke GET /threads/00000000-0000-4000-8000-000000000001
smoke POST /threads/search '{"limit":10}'
smoke POST /threads '{"metadata":{}}'

sleep 2
report "idle (after start)"

cat > "$WORK/mix.lua" <<'LUA'
-- A mix of authorised requests: thread reads with random ids (lookup + cache), searches
-- (filter merged into the body) and creates (metadata stamped into the body).
math.randomseed(os.time())
local n = 0
local function uuid()
  return string.format("%08x-%04x-4%03x-8%03x-%012x", math.random(0, 0xffffffff),
    math.random(0, 0xffff), math.random(0, 0xfff), math.random(0, 0xfff), math.random(0, 0xffffffffffff))
end
request = function()
  n = n + 1
  local h = { ["authorization"] = "Bearer alice-demo-key", ["content-type"] = "application/json" }
  local k = n % 3
  if k == 0 then
    return wrk.format("GET", "/threads/" .. uuid(), h, nil)
  elseif k == 1 then
    return wrk.format("POST", "/threads/search", h, '{"limit":10,"metadata":{"topic":"x"}}')
  else
    return wrk.format("POST", "/threads", h, '{"metadata":{"topic":"x"},"if_exists":"raise"}')
  end
end
LUA

load() { # connections
    local t0 c0 t1 c1
    t0="$(date +%s.%N)"; c0="$(cpu_ticks)"
    in_ns wrk -t2 -c"$1" -d"${DUR}s" -s "$WORK/mix.lua" http://127.0.0.1:8080 > "$WORK/wrk.out"
    t1="$(date +%s.%N)"; c1="$(cpu_ticks)"
    local rps non2xx
    rps="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")"
    non2xx="$(awk '/Non-2xx/ {print $5}' "$WORK/wrk.out")"
    printf '%-34s %8.0f req/s  graphguard CPU %4.2f cores  non-2xx: %s  latency %s\n' \
        "load, $1 connections, ${DUR}s" "$rps" "$(echo "($c1-$c0)/$HZ/($t1-$t0)" | bc -l)" "${non2xx:-0}" \
        "$(awk '/Latency/ {print "avg " $2 ", p(max) " $4}' "$WORK/wrk.out")"
    report "  after"
}
load 10
load 100
load 400

# Paced load: what a modest real deployment sees (wrk has no rate limit; a loop of curl does).
t0="$(date +%s.%N)"; c0="$(cpu_ticks)"
for _ in $(seq 1 200); do
    in_ns curl -s -o /dev/null -H 'authorization: Bearer alice-demo-key' -H 'content-type: application/json' \
        -X POST --data '{"limit":10}' http://127.0.0.1:8080/threads/search
done
t1="$(date +%s.%N)"; c1="$(cpu_ticks)"
printf '%-34s graphguard CPU %.3f cores (%.0f req/s, one connection each)\n' "200 sequential curl requests" \
    "$(echo "($c1-$c0)/$HZ/($t1-$t0)" | bc -l)" "$(echo "200/($t1-$t0)" | bc -l)"

# Large bodies (bodies are read whole before the decision): COUNT concurrent creates of SIZE MiB.
burst() { # COUNT SIZE_MIB
    head -c $(($2 * 1024 * 1024 - 64)) /dev/zero | tr '\0' 'a' > "$WORK/pad"
    { printf '{"metadata":{"topic":"x","pad":"'; cat "$WORK/pad"; printf '"}}'; } > "$WORK/big.json"
    local pids=()
    for _ in $(seq 1 "$1"); do
        in_ns curl -s -o /dev/null -H 'authorization: Bearer alice-demo-key' -H 'content-type: application/json' \
            -X POST --data-binary "@$WORK/big.json" http://127.0.0.1:8080/threads &
        pids+=($!)
    done
    wait "${pids[@]}"
    report "$1 concurrent $2 MiB bodies"
}
burst 8 8
sleep 3
report "3 s later"
burst 4 31
sleep 3
report "3 s later"
