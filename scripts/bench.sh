#!/bin/bash
# Benchmarks of stap-server against the raw engine work, the classic script and its own
# single-server figures (issue 7). Prints figures (medians of BENCH_RUNS runs, default 3) and
# ratios, measured side by side in one run.
#
#   scripts/bench.sh [start multi classic status requests compile warm concurrent fuse memory
#                     image image-from-nothing swarm]
#
# No argument runs every section but image-from-nothing (which removes and rebuilds the
# images stap-server:latest and stap-server-rootfs:trixie, only when no container uses them)
# and swarm (the image's distribution to the nodes of a swarm lab of three engines, over the
# nodes' engine APIs against a registry of Debian's docker-registry, which it installs; the
# lab's node image comes from scripts/test-prerequisites.sh).
# BENCH_IMAGE names another image to run the servers from; BENCH_CONF adds lines to the global
# file of every tenant it makes (`BENCH_CONF=CPUS=1` measures servers capped at one CPU).
# Needs root, a running engine, the image stap-server:latest, the stap client, the user
# stap-server, kernel headers under /lib/modules and Debian's systemtap-server for `classic`.
# Everything made carries a tenant of its own and is removed at the end, also on failure.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-3}
MANY=${BENCH_MANY:-50}
ALL=(start multi classic status requests compile warm concurrent fuse memory image)
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=("${ALL[@]}")
want() { local s; for s in "${SECTIONS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/stap-server
IMAGE=${BENCH_IMAGE:-stap-server:latest}

T=bench-$$
W=$(mktemp -d /tmp/stap-bench-XXXXXX)
HEADERS=$(for d in /lib/modules/*/build/Makefile; do [ -e "$d" ] && basename "$(dirname "$(dirname "$d")")"; done | sort | tail -1)
[ -n "$HEADERS" ] || { echo "bench.sh: no kernel build tree under /lib/modules" >&2; exit 1; }
REAL_BUILD=/lib/modules/$HEADERS/build
mkdir -p "$W/conf.d" "$W/avahi" "$W/modules" "$W/trees" "$W/client"
cat > "$W/global.conf" <<EOF
TENANT=$T
CONFIG_PATH=$W/conf.d
STAT_PATH=$W/stat
LOG_FILE=$W/log/log
AVAHI_SERVICES_PATH=$W/avahi
MODULES_PATH=$W/modules
IMAGE=$IMAGE
WARM=no
${BENCH_CONF:-}
EOF
# Fake releases (each a `build` link to the real headers) and absolute tree paths.
for i in $(seq 1 "$MANY"); do
  mkdir -p "$W/modules/bench$i"
  ln -s "$REAL_BUILD" "$W/modules/bench$i/build"
done
for i in $(seq 1 8); do ln -s "$(readlink -f "$REAL_BUILD")" "$W/trees/tree$i"; done

ss() { STAP_SERVER_GLOBAL_CONFIG=/nonexistent "$BIN" "$1" -c "$W/global.conf" "${@:2}"; }
CLASSIC_HOME_MADE=
PROXY_PID=
# Tenants of their own (fresh certificate volumes, so fresh caches) that sections make.
TENANTS=()
cleanup() {
  set +e
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  if [ -f "$W/classic.conf" ]; then
    /usr/bin/stap-server stop -c "$W/classic.conf" >/dev/null 2>&1
  fi
  [ -n "$CLASSIC_HOME_MADE" ] && rm -rf /var/lib/stap-server
  # Certificates the manager added to the host's client trust.
  for v in $(docker volume ls -q --filter "label=io.stap-server.tenant=$T"; for t in "${TENANTS[@]}"; do docker volume ls -q --filter "label=io.stap-server.tenant=$t"; done); do
    m=$(docker volume inspect -f '{{.Mountpoint}}' "$v")
    if [ -f "$m/ssl/server/stap.cert" ]; then
      serial=$(openssl x509 -inform DER -in "$m/ssl/server/stap.cert" -noout -serial 2>/dev/null \
        | sed 's/serial=//; s/^\(.\)/0\1/' | python3 -c '
import sys
s = sys.stdin.read().strip()
if s:
    s = s if len(s) % 2 == 0 else "0" + s
    print(":".join(s[i:i+2] for i in range(0, len(s), 2)).lower())')
      [ -n "$serial" ] && SYSTEMTAP_DIR=$W/client stap --trust-servers=ssl,signer,all-users,revoke,no-prompt \
        --use-server="$serial" >/dev/null 2>&1
    fi
  done
  for t in "$T" "${TENANTS[@]}"; do
    for l in "io.stap-server.tenant=$t" "io.stap-server.bench=$t"; do
      ids=$(docker ps -aq --filter "label=$l")
      [ -n "$ids" ] && docker rm -f $ids >/dev/null
    done
    for l in "io.stap-server.tenant=$t" "io.stap-server.bench=$t"; do
      for v in $(docker volume ls -q --filter "label=$l"); do docker volume rm "$v" >/dev/null; done
    done
    for n in $(docker network ls -q --filter "label=io.stap-server.tenant=$t"); do docker network rm "$n" >/dev/null; done
  done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# elapsed CMD...: runs CMD (quietly), prints the seconds it took; fails if CMD fails.
elapsed() {
  local t0 t1
  t0=$(now)
  "$@" > "$W/last.out" 2>&1 || { echo "bench.sh: failed: $*" >&2; cat "$W/last.out" >&2; return 1; }
  t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
ROWS=()
# row NAME OURS BASE GOAL
row() { ROWS+=("$(printf '%-44s %9s s %9s s %7s   %s' "$1" "$2" "$3" "$(ratio "$2" "$3")" "$4")"); echo "${ROWS[-1]}"; }
note() { ROWS+=("$1"); echo "$1"; }

# Waits until ADDR:PORT accepts a connection (what the manager waits for).
wait_port() {
  local deadline=$((SECONDS + 90))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.01
  done
}
container_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }

# The `docker run -d` equivalent of a container the manager made (same image, arguments,
# mounts, user, env, limits, network, volume), under another name and a bench label.
docker_run_args() {
  docker inspect "$1" | python3 -c '
import json, sys
c = json.load(sys.stdin)[0]
cfg, h = c["Config"], c["HostConfig"]
def mount(m):
    if m["Type"] == "tmpfs":
        o = m.get("TmpfsOptions") or {}
        opts = ["size=%d" % o["SizeBytes"]] if o.get("SizeBytes") else []
        if o.get("Mode"): opts.append("mode=%o" % o["Mode"])
        return ["--tmpfs", m["Target"] + (":" + ",".join(opts) if opts else "")]
    ro = ",readonly" if m.get("ReadOnly") else ""
    return ["--mount", "type=%s,source=%s,target=%s%s" % (m["Type"], m.get("Source", ""), m["Target"], ro)]
a = ["--name", sys.argv[1], "--label", "io.stap-server.bench=" + sys.argv[2]]
net = sys.argv[3] if len(sys.argv) > 3 else h["NetworkMode"]
a += ["--network", net]
if net != "host":
    for b in h.get("Binds") or []: a += ["-v", b]
    for m in h.get("Mounts") or []: a += mount(m)
    for k, v in (h.get("Tmpfs") or {}).items(): a += ["--tmpfs", k + (":" + v if v else "")]
    if h.get("ReadonlyRootfs"): a.append("--read-only")
    for cap in h.get("CapDrop") or []: a += ["--cap-drop", cap]
    for s in h.get("SecurityOpt") or []: a += ["--security-opt", s]
    if h.get("Memory"): a += ["--memory", str(h["Memory"])]
    if h.get("NanoCpus"): a += ["--cpus", str(h["NanoCpus"] / 1e9)]
    if h.get("PidsLimit"): a += ["--pids-limit", str(h["PidsLimit"])]
    for u in h.get("Ulimits") or []: a += ["--ulimit", "%s=%d:%d" % (u["Name"], u["Soft"], u["Hard"])]
    for p, bs in (h.get("PortBindings") or {}).items():
        for b in bs or []: a += ["-p", "%s:%s" % (b.get("HostPort") or "", p.split("/")[0])]
else:
    for b in h.get("Binds") or []: a += ["-v", b]
    for m in h.get("Mounts") or []: a += mount(m)
    for k, v in (h.get("Tmpfs") or {}).items(): a += ["--tmpfs", k + (":" + v if v else "")]
if cfg.get("User"): a += ["--user", cfg["User"]]
for e in cfg.get("Env") or []: a += ["-e", e]
if cfg.get("Entrypoint"): a += ["--entrypoint", cfg["Entrypoint"][0]]
a.append(cfg["Image"])
cmd = (cfg.get("Entrypoint") or [])[1:] + (cfg.get("Cmd") or [])
if len(sys.argv) > 4:
    cmd = [sys.argv[4] if x == "5600" else x for x in cmd]
a += cmd
print("\0".join(a), end="")
' "${@:2}"
}

raw_run() { # DOCKER_RUN_ARGS...: docker run -d, then wait until IP:5600 accepts
  local id
  id=$(docker run -d "$@") && wait_port "$(container_ip "$id")" 5600
}

banner() { echo; echo "== $*"; }
echo "stap-server benchmarks: $RUNS runs each (medians), tenant $T, headers $HEADERS"
echo "machine: $(nproc) cores, $(. /etc/os-release; echo "$PRETTY_NAME"), docker $(docker version -f '{{.Server.Version}}')"

# Warm-up: the certificate volume and network exist before anything is timed (made once).
ss start -r bench1 >/dev/null
ss stop >/dev/null

# proxied LOG CMD...: runs CMD with the engine reached through a proxy of its socket that
# writes each request line (method and path) to LOG.
proxied() {
  local log=$1 sock=$W/proxy-$RANDOM.sock
  shift
  python3 - "$sock" "$log" <<'EOF' &
import os, re, socket, sys, threading
path, log = sys.argv[1], open(sys.argv[2], "a", buffering=1)
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(64)
req = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (/\S*) HTTP/1\.[01]\r\n")
def pipe(a, b, record):
    try:
        while (d := a.recv(65536)):
            if record:
                for m in req.finditer(d): log.write(m.group(1).decode() + " " + m.group(2).decode() + "\n")
            b.sendall(d)
    except OSError: pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX); u.connect("/var/run/docker.sock")
    threading.Thread(target=pipe, args=(c, u, True), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c, False), daemon=True).start()
EOF
  PROXY_PID=$!
  for k in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  local rc=0
  DOCKER_HOST=unix://$sock "$@" || rc=$?
  sleep 0.2
  kill "$PROXY_PID"; PROXY_PID=
  return $rc
}
# lists LOG: how many container list calls LOG holds.
lists() { grep -cE '^GET (/v[0-9.]+)?/containers/json' "$1" || true; }

if want start; then
  banner "a. start of one server vs docker run -d + wait for IP:5600"
  ours=(); raw=()
  for i in $(seq 1 "$RUNS"); do
    ours+=("$(elapsed ss start -r bench1)")
    id=$(docker ps -q --filter "label=io.stap-server.tenant=$T" | head -1)
    mapfile -d '' -t args < <(docker_run_args "$id" "stap-bench-$T-raw" "$T")
    ss stop >/dev/null
    raw+=("$(elapsed raw_run "${args[@]}")")
    docker rm -f "stap-bench-$T-raw" >/dev/null
  done
  START1=$(median "${ours[@]}")
  row "start (1 server)" "$START1" "$(median "${raw[@]}")" "goal <=1.2x"
fi

if want multi || want classic; then
  banner "b. start -i of 8 releases vs start of one"
  rm -rf "$W/modules8"; mkdir -p "$W/modules8"
  for i in $(seq 1 8); do cp -a "$W/modules/bench$i" "$W/modules8/"; done
  sed "s|^MODULES_PATH=.*|MODULES_PATH=$W/modules8|" "$W/global.conf" > "$W/global8.conf"
  ss8() { STAP_SERVER_GLOBAL_CONFIG=/nonexistent "$BIN" "$1" -c "$W/global8.conf" "${@:2}"; }
  eight=(); one=()
  for i in $(seq 1 "$RUNS"); do
    one+=("$(elapsed ss start -r bench1)"); ss stop >/dev/null
    eight+=("$(elapsed ss8 start -i)")
    n=$(docker ps -q --filter "label=io.stap-server.tenant=$T" | wc -l)
    [ "$n" = 8 ] || { echo "bench.sh: start -i made $n servers, not 8" >&2; exit 1; }
    ss stop >/dev/null
  done
  # The engine's own figure for 8: the same 8 containers by docker run -d, all at once.
  raw8=()
  for i in $(seq 1 "$RUNS"); do
    ss8 start -i >/dev/null
    for id in $(docker ps -q --filter "label=io.stap-server.tenant=$T"); do
      docker_run_args "$id" "stap-bench-$T-raw-$id" "$T" > "$W/args-$id"
    done
    ss stop >/dev/null
    par8() {
      local f pids=()
      for f in "$W"/args-*; do
        (mapfile -d '' -t a < "$f"; raw_run "${a[@]}" >/dev/null) & pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p" || return 1; done
    }
    raw8+=("$(elapsed par8)")
    docker rm -f $(docker ps -aq --filter "label=io.stap-server.bench=$T") >/dev/null
    rm -f "$W"/args-*
  done
  START8=$(median "${eight[@]}")
  [ -n "${START1:-}" ] || START1=$(median "${one[@]}")
  row "start -i (8 releases) vs start (1)" "$START8" "$(median "${one[@]}")" "goal <=1.5x"
  row "start -i (8) vs 8 x docker run -d at once" "$START8" "$(median "${raw8[@]}")" "(engine bound)"
fi

if want classic; then
  banner "c. 8 servers: ours vs the classic script (local processes, as user stap-server)"
  TREES=(); for i in $(seq 1 8); do TREES+=(-r "$W/trees/tree$i"); done
  mkdir -p "$W/classic/conf.d" "$W/classic/stat" "$W/classic/log"
  chown stap-server "$W/classic/log"
  cat > "$W/classic.conf" <<EOF
CONFIG_PATH=$W/classic/conf.d
STAT_PATH=$W/classic/stat
LOG_FILE=$W/classic/log/log
STAP_USER=stap-server
EOF
  if [ ! -x /usr/bin/stap-server ] || [ ! -x /usr/lib/systemtap/stap-serverd ]; then
    note "c. classic: skipped: /usr/bin/stap-server or stap-serverd is not installed (apt-get install systemtap-server)"
  else
    # The classic user's home holds its certificate (made once, untimed); one server per
    # invocation, as the classic script makes one server of all the -r of a command line.
    if [ ! -d /var/lib/stap-server ]; then
      install -d -o stap-server -g stap-server /var/lib/stap-server
      CLASSIC_HOME_MADE=1
    fi
    classic8() {
      local i
      for i in $(seq 1 8); do
        /usr/bin/stap-server start -c "$W/classic.conf" -u stap-server -r "$W/trees/tree$i" || return 1
      done
    }
    /usr/bin/stap-server start -c "$W/classic.conf" -u stap-server -r "$W/trees/tree1" >/dev/null 2>&1 || true
    /usr/bin/stap-server stop -c "$W/classic.conf" >/dev/null 2>&1 || true
    ours=(); classic=(); why=
    for i in $(seq 1 "$RUNS"); do
      ours+=("$(elapsed ss start "${TREES[@]}")")
      n=$(docker ps -q --filter "label=io.stap-server.tenant=$T" | wc -l)
      ss stop >/dev/null
      t=$(elapsed classic8) || { why=$(cat "$W/last.out"); break; }
      m=$(ls "$W/classic/stat" | grep -c '\.stat$' || true)
      classic+=("$t")
      /usr/bin/stap-server stop -c "$W/classic.conf" >/dev/null 2>&1 || true
    done
    if [ -n "$why" ]; then
      note "c. classic: the classic script failed here: $(echo "$why" | grep -v '^\s*$' | head -3 | tr '\n' ' ')"
    else
      row "8 trees: ours ($n) vs classic script ($m)" "$(median "${ours[@]}")" "$(median "${classic[@]}")" "(reported)"
    fi
  fi
fi

if want status; then
  banner "d/e. $MANY servers: status vs docker ps; stop of $MANY vs stop of one"
  st=(); ps=(); stopn=(); stop1=(); rmn=(); calls=
  for i in $(seq 1 "$RUNS"); do
    ss start -i >/dev/null
    n=$(docker ps -q --filter "label=io.stap-server.tenant=$T" | wc -l)
    [ "$n" = "$MANY" ] || { echo "bench.sh: start -i made $n servers, not $MANY" >&2; exit 1; }
    for j in 1 2 3; do
      st+=("$(elapsed ss status)")
      ps+=("$(elapsed docker ps --filter "label=io.stap-server.tenant=$T")")
    done
    if [ -z "$calls" ]; then
      # Count the engine requests of one `status`.
      proxied "$W/proxy.log" ss status >/dev/null
      calls=$(sed 's|^\(\S* \)/v[0-9.]*/|\1/|; s|?.*||' "$W/proxy.log" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2" "$3, $1; sep="; "}')
      lists=$(lists "$W/proxy.log")
      per=$(grep -cE '^GET (/v[0-9.]+)?/containers/[^/?]+/(json|archive)' "$W/proxy.log" || true)
    fi
    stopn+=("$(elapsed ss stop)")
    # The engine's own figure: the same 50 removed by one `docker rm -f` (the CLI goes
    # concurrently), without the stop grace (stap-serverd exits at once on SIGTERM anyway).
    ss start -i >/dev/null
    rmn+=("$(elapsed sh -c "docker rm -f \$(docker ps -q --filter label=io.stap-server.tenant=$T)")")
    ss start -r bench1 >/dev/null
    stop1+=("$(elapsed ss stop)")
  done
  row "status ($MANY running) vs docker ps" "$(median "${st[@]}")" "$(median "${ps[@]}")" "goal <=1.5x"
  note "status engine requests: $calls"
  note "status: $lists list call(s), $per per-container call(s) for $MANY servers"
  row "stop ($MANY) vs stop (1)" "$(median "${stopn[@]}")" "$(median "${stop1[@]}")" "goal <=2x"
  row "stop ($MANY) vs docker rm -f of the $MANY" "$(median "${stopn[@]}")" "$(median "${rmn[@]}")" "(engine bound)"
fi

if want requests; then
  banner "h. engine requests of one action on one server"
  for action in "start -r bench1" "restart -r bench1" "status" "stop"; do
    log=$W/requests-${action%% *}.log
    # shellcheck disable=SC2086
    proxied "$log" ss $action >/dev/null 2>&1
    calls=$(sed 's|^\(\S* \)/v[0-9.]*/|\1/|; s|?.*||; s|/containers/[^/]*/|/containers/ID/|' "$log" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2" "$3, $1; sep="; "}')
    note "$(printf '%-20s %s list call(s), %s requests: %s' "$action" "$(lists "$log")" "$(wc -l < "$log")" "$calls")"
  done
fi

if want compile; then
  banner "f. compile through our container vs the same image with --network host, no limits"
  ss start -r bench1 >/dev/null
  id=$(docker ps -q --filter "label=io.stap-server.tenant=$T" | head -1)
  PORT=$(docker port "$id" 5600/tcp | head -1 | sed 's/.*://')
  HPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
  mapfile -d '' -t args < <(docker_run_args "$id" "stap-bench-$T-host" "$T" host "$HPORT")
  docker run -d "${args[@]}" >/dev/null
  wait_port 127.0.0.1 "$HPORT"
  export SYSTEMTAP_DIR=$W/client
  stap --trust-servers=ssl,no-prompt --use-server=127.0.0.1:"$PORT" >/dev/null 2>&1 || true
  stap --trust-servers=ssl,no-prompt --use-server=127.0.0.1:"$HPORT" >/dev/null 2>&1 || true
  ours=(); hostnet=()
  compile() { # PORT N
    (cd "$W/client" && stap --use-server=127.0.0.1:"$1" -r bench1 -p4 -m "bench_$2" \
      -e "probe timer.s(1) { printf(\"%d\\n\", $2) exit() }")
  }
  base=$RANDOM
  # Untimed first compile: the volume's cache then holds what every script shares (the
  # kernel's configuration probes); each timed script is new, so no module comes from cache.
  compile "$PORT" "$base" >/dev/null 2>&1
  for i in $(seq 1 "$RUNS"); do
    ours+=("$(elapsed compile "$PORT" $((base + 2 * i)))")
    hostnet+=("$(elapsed compile "$HPORT" $((base + 2 * i + 1)))")
  done
  unset SYSTEMTAP_DIR
  docker rm -f "stap-bench-$T-host" >/dev/null
  ss stop >/dev/null
  row "compile (-p4, new script) vs host network" "$(median "${ours[@]}")" "$(median "${hostnet[@]}")" "goal <=1.05x"
fi

# The stock client, trusting what the benchmark's servers present, in a directory of its own.
client() { (cd "$W/client" && SYSTEMTAP_DIR=$W/client/.systemtap stap "$@"); }
trust_port() { # PORT: trusted, or says why not
  client --trust-servers=ssl,no-prompt --use-server=127.0.0.1:"$1" > "$W/trust.out" 2>&1 ||
    { echo "bench.sh: cannot trust the server at port $1:" >&2; cat "$W/trust.out" >&2; return 1; }
}
# Scripts nobody compiled before (so stap's module cache never answers), each with a number of
# its own (the time and the process): a timer, a tracepoint with a $variable, a DWARF probe
# with a $variable.
script() { # KIND NUMBER
  case $1 in
    timer) echo "probe timer.s(1) { printf(\"%s\\n\", \"$2\") exit() }" ;;
    trace) echo "probe kernel.trace(\"sched:sched_wakeup\") { printf(\"%d %s\\n\", \$p->pid, \"$2\") exit() }" ;;
    dwarf) echo "probe kernel.function(\"vfs_read\") { printf(\"%d %s\\n\", \$count, \"$2\") exit() }" ;;
  esac
}
compile_at() { # PORT KIND: one -p4 compile of a new script through the server at PORT
  local n
  n=$(date +%s%N)$BASHPID
  client --use-server=127.0.0.1:"$1" -r "$HEADERS" -p4 -m "b$n" -e "$(script "$2" "$n")"
}
# together PORT KIND N: N clients at once, each a new script; fails if one fails.
together() {
  local pids=() k rc=0
  for k in $(seq 1 "$3"); do compile_at "$1" "$2" > "$W/together.$k" 2>&1 & pids+=($!); done
  for k in "${pids[@]}"; do wait "$k" || rc=1; done
  return $rc
}
# A tenant of its own with global file $W/NAME.conf (extra lines from standard input); prints
# the tenant.
tenant() { # NAME
  local t=$T-$1
  TENANTS+=("$t")
  { sed "s|^TENANT=.*|TENANT=$t|; /^WARM=/d; /^MODULES_PATH=/d" "$W/global.conf"; cat; } > "$W/$1.conf"
  echo "$t"
}
as() { STAP_SERVER_GLOBAL_CONFIG=/nonexistent "$BIN" "$2" -c "$W/$1.conf" "${@:3}"; }
port_of() { # NAME: the host port of that tenant's (one) server
  docker port "$(docker ps -q --filter "label=io.stap-server.tenant=$T-$1" | head -1)" 5600/tcp | head -1 | sed 's/.*://'
}

if want warm; then
  banner "i. first compile after start vs a warm one (tracepoint scripts, fresh certificate volumes)"
  for w in yes no; do
    tenant "warm-$w" > /dev/null <<< "WARM=$w"
    t0=$(now)
    as "warm-$w" start -r "$HEADERS" >/dev/null
    if [ "$w" = yes ]; then
      while as warm-yes status | grep -q 'warm-up warming'; do sleep 1; done
      as warm-yes status | grep -q 'warm-up ready' || { as warm-yes status >&2; exit 1; }
      warmed=$(python3 -c "print(f'{$(now) - $t0:.1f}')")
    fi
    port=$(port_of "warm-$w")
    trust_port "$port"
    first=$(elapsed compile_at "$port" trace)
    warm=$(elapsed compile_at "$port" trace)
    if [ "$w" = yes ]; then
      row "first compile after warm-up vs warm" "$first" "$warm" "goal <=1.5x"
      note "$(printf '%-44s %9s s' "warm-up (start to ready)" "$warmed")"
    else
      row "first compile with WARM=no vs warm" "$first" "$warm" "(no warm-up)"
    fi
    as "warm-$w" stop >/dev/null
  done
fi

if want concurrent; then
  banner "j. N clients at once (new timer scripts) and single tracepoint/DWARF compiles: ours vs stap-serverd of the same image with the host's whole view and no limits"
  tenant conc > /dev/null <<< "WARM=no"
  as conc start -r "$HEADERS" >/dev/null
  PORT=$(port_of conc)
  RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
  # The reference: stap-serverd of the same image as the server user, but with the host's
  # kernel trees, kbuild and debuginfo mounted whole, no resource or request limits, and a
  # certificate made at its start in its own writable layer.
  kbuild=$(readlink -f "/lib/modules/$HEADERS/build/scripts" | sed 's|/scripts$||')
  docker run -d --name "stap-bench-$T-ref" --label "io.stap-server.bench=$T" \
    --user "$(id -u stap-server):$(id -g stap-server)" \
    -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro -v /usr/lib/debug:/usr/lib/debug:ro \
    -v "$kbuild:$kbuild:ro" -e HOME=/tmp -e SYSTEMTAP_DIR=/tmp/.systemtap -e TMPDIR=/tmp \
    -p "$RPORT:5600" --entrypoint /bin/sh "$IMAGE" \
    -c 'cd /tmp && /usr/lib/systemtap/stap-gen-cert >/dev/null && exec /usr/lib/systemtap/stap-serverd "$@"' \
    sh -a x86_64 -r "$HEADERS" --port 5600 --max-request-size 1048576 --max-compressed-request 262144 >/dev/null
  # The engine's port proxy accepts before the server listens: its log says when it does.
  until docker logs "stap-bench-$T-ref" 2>&1 | grep -q 'Using a maximum of'; do
    docker ps -q --filter "name=stap-bench-$T-ref" | grep -q . || { docker logs "stap-bench-$T-ref" >&2; exit 1; }
    sleep 0.2
  done
  wait_port 127.0.0.1 "$RPORT"
  trust_port "$PORT"
  # Trusted once it presents its certificate (a moment after that line): a first request
  # that stops after pass 2 says so.
  for k in $(seq 60); do
    trust_port "$RPORT" 2>/dev/null && client --use-server=127.0.0.1:"$RPORT" -r "$HEADERS" -p2 \
      -e 'probe begin { exit() }' >/dev/null 2>&1 && break
    [ "$k" -lt 60 ] || { echo "bench.sh: the reference server cannot be trusted" >&2; exit 1; }
    sleep 0.5
  done
  # Untimed: each server's cache gets what every script shares (configuration probes,
  # tracepoint queries), and the debuginfo is read once.
  for p in "$PORT" "$RPORT"; do
    for kind in timer trace dwarf; do elapsed compile_at "$p" "$kind" >/dev/null; done
  done
  # side_by_side LABEL GOAL CMD ARGS...: `CMD PORT ARGS...` through ours and the reference,
  # alternately, RUNS times each.
  side_by_side() {
    local label=$1 goal=$2 ours=() ref=() i
    shift 2
    for i in $(seq 1 "$RUNS"); do
      ours+=("$(elapsed "$1" "$PORT" "${@:2}")")
      ref+=("$(elapsed "$1" "$RPORT" "${@:2}")")
    done
    row "$label" "$(median "${ours[@]}")" "$(median "${ref[@]}")" "$goal"
  }
  for n in 1 2 4 8; do
    side_by_side "$n client(s) at once vs reference" "goal <=1.1x" together timer "$n"
  done
  for kind in trace dwarf; do
    side_by_side "$kind compile vs reference" "goal <=1.05x" compile_at "$kind"
  done
  docker rm -f "stap-bench-$T-ref" >/dev/null
  as conc stop >/dev/null
fi

if want fuse; then
  banner "k. compiles reading the image's files from its layers ($(docker info -f '{{.Driver}}')) vs from volumes filled from the image"
  # Containers of the image, each with the host's trees and the translator as a server's
  # requests run it: one reads /usr (stap, its tapsets and runtime, gcc) from the image's
  # layers, one from a volume the engine fills from the image's /usr on first use, one only
  # stap's tapsets and runtime (/usr/share/systemtap) from such a volume, read-only.
  kbuild=$(readlink -f "/lib/modules/$HEADERS/build/scripts" | sed 's|/scripts$||')
  for v in usr share; do
    docker volume create --label "io.stap-server.bench=$T" "stap-bench-$T-$v" >/dev/null
  done
  WHERE=(layers usr share)
  for where in "${WHERE[@]}"; do
    extra=()
    [ "$where" = usr ] && extra=(-v "stap-bench-$T-usr:/usr")
    [ "$where" = share ] && extra=(--mount "type=volume,src=stap-bench-$T-share,dst=/usr/share/systemtap,readonly")
    docker run -d --name "stap-bench-$T-$where" --label "io.stap-server.bench=$T" \
      --user "$(id -u stap-server):$(id -g stap-server)" "${extra[@]}" \
      -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro -v "$kbuild:$kbuild:ro" \
      --tmpfs /tmp:rw,size=1g -e HOME=/tmp -e SYSTEMTAP_DIR=/tmp/.systemtap -e TMPDIR=/tmp \
      --entrypoint sleep "$IMAGE" infinity >/dev/null
  done
  in_container() { # WHERE KIND: one -p4 compile of a new script there
    local n
    n=$(date +%s%N)$BASHPID
    docker exec -w /tmp "stap-bench-$T-$1" /usr/local/lib/stap-server/translator \
      -r "$HEADERS" -p4 -m "b$n" -e "$(script "$2" "$n")"
  }
  # The CPU time (clock ticks) the FUSE daemon serving a container's root has used: the
  # work each lookup and read through it costs, whatever else loads the machine.
  fuse_ticks() { # WHERE
    local merged pid
    merged=$(docker inspect -f '{{.GraphDriver.Data.MergedDir}}' "stap-bench-$T-$1")
    pid=$(pgrep -f -- "fuse-overlayfs .*$merged" | head -1 || true)
    [ -n "$pid" ] || { echo 0; return; }
    awk '{print $14 + $15}' "/proc/$pid/stat"
  }
  # Untimed: each cache gets what the scripts share, and the page cache what they read.
  for where in "${WHERE[@]}"; do
    for kind in timer trace; do elapsed in_container "$where" "$kind" >/dev/null; done
  done
  hz=$(getconf CLK_TCK)
  for kind in timer trace; do
    layers=() usr=() share=()
    declare -A ticks=([layers]=0 [usr]=0 [share]=0)
    for i in $(seq 1 "$RUNS"); do
      for where in "${WHERE[@]}"; do
        before=$(fuse_ticks "$where")
        t=$(elapsed in_container "$where" "$kind")
        ticks[$where]=$((ticks[$where] + $(fuse_ticks "$where") - before))
        eval "$where+=(\"\$t\")"
      done
    done
    row "$kind compile, image layers vs /usr on a volume" "$(median "${layers[@]}")" \
      "$(median "${usr[@]}")" "moved if >1.1x"
    row "$kind compile, image layers vs tapsets on a volume" "$(median "${layers[@]}")" \
      "$(median "${share[@]}")" "moved if >1.1x"
    note "$(printf '%-44s %s' "$kind compile, FUSE daemon CPU per compile" \
      "$(python3 -c "r,h=$RUNS,$hz; print(' '.join(f'{w} {t/h/r:.3f} s' for w,t in [('layers',${ticks[layers]}),('usr-volume',${ticks[usr]}),('tapsets-volume',${ticks[share]})]))")")"
  done
  for where in "${WHERE[@]}"; do docker rm -f "stap-bench-$T-$where" >/dev/null; done
  for v in usr share; do docker volume rm "stap-bench-$T-$v" >/dev/null; done
fi

if want memory; then
  banner "g. the manager's peak memory"
  command -v /usr/bin/time >/dev/null || apt-get install -y time >/dev/null
  rss() { # ACTION ARGS...: the manager's peak resident set, in KB
    /usr/bin/time -f %M -o "$W/rss" env STAP_SERVER_GLOBAL_CONFIG=/nonexistent \
      "$BIN" "$1" -c "$W/global.conf" "${@:2}" >/dev/null 2>&1
    tail -1 "$W/rss"
  }
  m1=$(rss start -r bench1)
  m2=$(rss status)
  ss stop >/dev/null
  note "$(printf '%-44s %9s KB (start), %s KB (status)   goal <20 MB' "peak RSS of the manager" "$m1" "$m2")"
fi

if want image; then
  banner "g. image size"
  size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
  note "$(printf '%-44s %9s MB   goal <450 MB' "image $IMAGE size" "$((size / 1000000))")"
fi

if want image-from-nothing; then
  banner "g. image build from nothing"
  users=$(docker ps -a --format '{{.Names}} {{.Image}}' | awk -v i="$IMAGE" '$2 == i || $2 == "stap-server-rootfs:trixie"')
  if [ -n "$users" ]; then
    note "image from nothing: skipped: containers use the images ($(echo "$users" | awk '{print $1}' | tr '\n' ' '))"
  else
    docker rmi -f "$IMAGE" stap-server-rootfs:trixie >/dev/null 2>&1 || true
    t=$(elapsed "$BIN" image build)
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    note "$(printf '%-44s %9s s, %s MB   goal <120 s, <450 MB' "image build from nothing" "$t" "$((size / 1000000))")"
  fi
fi

if want swarm; then
  banner "h. image distribution on a swarm: engine API against a registry (one run)"
  command -v docker-registry >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null
  # The test removes its lab, registry process, storage and images, also on failure.
  STAP_TEST_IMAGE=$IMAGE cargo test --release --quiet --test swarm image_distribution_api_vs_registry \
    -- --ignored --nocapture --test-threads 1 > "$W/swarm.out" 2>&1 || {
    cat "$W/swarm.out" >&2
    echo "bench.sh: the swarm section failed" >&2
    exit 1
  }
  while IFS= read -r line; do note "$line"; done < <(grep -E '^(image distribution|engine API|registry:)' "$W/swarm.out")
fi

echo
echo "== summary (medians of $RUNS runs; ours, baseline, ratio)"
printf '%s\n' "${ROWS[@]}"
