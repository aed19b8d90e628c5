#!/usr/bin/env bash
# Local Apache Kafka (single-node KRaft) and Redis on 127.0.0.1 for tests, CI and the demo.
# No Docker here: Kafka runs from its Maven Central jars, Redis from Debian's redis-server.
#
#   bash deploy/local/services.sh install|start [--secure]|stop [--keep-data]|status|env
#   bash deploy/local/services.sh start-redis|stop-redis       (tests simulate a Redis outage)
#   bash deploy/local/services.sh start-kafka|stop-kafka [--keep-data]   (a broker restart)
#   bash deploy/local/services.sh kafka-class CLASS [ARGS...]  (run a Kafka tool from the jars)
#   eval "$(bash deploy/local/services.sh env)"
#
# Ports are free ones picked by 'start' and recorded for this checkout (FEATDISTILL_KAFKA_PORT,
# FEATDISTILL_KAFKA_CONTROLLER_PORT, FEATDISTILL_REDIS_PORT fix them instead); the other
# commands use the recorded ones. --secure adds TLS/SASL listeners (deploy/local/secure.sh) until
# 'stop'. See deploy/local/README.md for the variables.
set -euo pipefail

CACHE="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}"
KAFKA_VERSION="${FEATDISTILL_KAFKA_VERSION:-4.1.2}"
KAFKA_PARTITIONS="${FEATDISTILL_KAFKA_PARTITIONS:-1}"
START_TIMEOUT="${FEATDISTILL_START_TIMEOUT:-90}"

# Jars are shared by every clone. Runtime state (pids, logs, data, the ports picked) belongs to
# one checkout: two clones side by side each get their own broker and Redis, and 'stop' in one
# never reaches the other's.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
SERVICES_ROOT="$CACHE/services"
SERVICES_DIR="${FEATDISTILL_SERVICES_DIR:-$SERVICES_ROOT/$(basename "$REPO")-$(printf %s "$REPO" | sha256sum | cut -c1-12)}"
PORTS_FILE="$SERVICES_DIR/ports"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"

# shellcheck source=deploy/local/secure.sh
source "$REPO/deploy/local/secure.sh"
SECURE=0; [ ! -f "$SECURE_DIR.on" ] || SECURE=1  # 'start --secure' stays on until 'stop'
log() { echo "services: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Pid from a pid file, only if that process is alive and really is what we started
# (pids get recycled; never signal a stranger).
live_pid() {  # pidfile cmdline-pattern
    local pid; [ -s "$1" ] || return 1; pid="$(cat "$1")"
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
    echo "$pid"
}

# SIGTERM, wait up to $3 seconds, then SIGKILL.
terminate() {  # pidfile pattern timeout name
    local pid i
    pid="$(live_pid "$1" "$2")" || { rm -f "$1"; return 0; }
    log "stopping $4 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $3 * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$4 did not exit after ${3}s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5
    fi
    rm -f "$1"
}

fail_with_log() {  # logfile message
    log "$2; errors and last lines of $1:"
    # Kafka dumps its whole config (tab-indented) at start; the cause is in the ERROR lines.
    grep -E ' (ERROR|FATAL) |^Caused by' "$1" 2>/dev/null | head -n 12 >&2 || true
    grep -v -P '^\t' "$1" 2>/dev/null | tail -n 25 >&2 || true
    exit 1
}

# ---------------------------------------------------------------- ports
# A port given in FEATDISTILL_*_PORT is used as is and never recorded. Any other port is the
# one this checkout recorded in $PORTS_FILE; 'start' picks and records it when there is none.
recorded_port() {  # key
    [ -f "$PORTS_FILE" ] && sed -n "s/^$1=\([0-9][0-9]*\)\$/\1/p" "$PORTS_FILE" | head -n 1
    return 0
}

load_ports() {
    REC_KAFKA="$(recorded_port kafka)"; REC_CONTROLLER="$(recorded_port controller)"
    REC_REDIS="$(recorded_port redis)"
    KAFKA_PORT="${FEATDISTILL_KAFKA_PORT:-$REC_KAFKA}"
    CONTROLLER_PORT="${FEATDISTILL_KAFKA_CONTROLLER_PORT:-$REC_CONTROLLER}"
    REDIS_PORT="${FEATDISTILL_REDIS_PORT:-$REC_REDIS}"
    secure_load_ports
    set_run_dirs
}

# One dir per port, so setups with different explicit ports never share a pid file.
set_run_dirs() {
    KAFKA_RUN="$SERVICES_DIR/kafka-$KAFKA_PORT"
    REDIS_RUN="$SERVICES_DIR/redis-$REDIS_PORT"
    KAFKA_CMDLINE="kafka.Kafka $KAFKA_RUN/server.properties"  # what our broker's pid must run
}

# A free port on 127.0.0.1, checked by binding it. Below the kernel's ephemeral range (an
# outgoing connection could take such a port between this pick and the service's bind), and
# never a port another checkout recorded: it will want it back on its next start.
pick_port() {
    command -v python3 >/dev/null || die "needs python3 to pick free ports (or set FEATDISTILL_*_PORT)"
    local port
    port="$(cat "$SERVICES_ROOT"/*/ports 2>/dev/null | sed -n 's/^[a-z]*=//p' |
        python3 -c '
import random, socket, sys
taken = {int(p) for p in sys.stdin.read().split() + sys.argv[1:] if p.isdigit()}
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(20000, low if low > 21000 else 61000), 1000):
    if port in taken:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
' "$KAFKA_PORT" "$CONTROLLER_PORT" "$REDIS_PORT" "$@")"
    [ -n "$port" ] || die "found no free port on 127.0.0.1"
    echo "$port"
}

# Keep a recorded port while our service holds it or nobody does; after a crash or a reboot
# another program may have taken it, and then this checkout moves to a new one.
keep_port() {  # port our-pid-alive name
    [ -n "$1" ] || return 1
    if [ "$2" = 1 ] || ! port_open "$1"; then return 0; fi
    log "$3 port $1 is now taken by another program; picking a new one"
    return 1
}

# Fill in every port not given explicitly and record them, under a lock shared by all
# checkouts so two starting at once never pick the same port.
choose_ports() {
    mkdir -p "$SERVICES_ROOT" "$SERVICES_DIR"
    exec 7>"$SERVICES_ROOT/.ports.lock" && flock 7
    load_ports
    local kafka_alive=0 redis_alive=0
    live_pid "$KAFKA_RUN/kafka.pid" "$KAFKA_CMDLINE" >/dev/null && kafka_alive=1
    live_pid "$REDIS_RUN/redis.pid" redis-server >/dev/null && redis_alive=1
    [ -n "${FEATDISTILL_KAFKA_PORT:-}" ] || keep_port "$KAFKA_PORT" $kafka_alive kafka ||
        KAFKA_PORT="$(pick_port)"
    [ -n "${FEATDISTILL_KAFKA_CONTROLLER_PORT:-}" ] ||
        keep_port "$CONTROLLER_PORT" $kafka_alive "kafka controller" || CONTROLLER_PORT="$(pick_port)"
    [ -n "${FEATDISTILL_REDIS_PORT:-}" ] || keep_port "$REDIS_PORT" $redis_alive redis ||
        REDIS_PORT="$(pick_port)"
    if secure_wanted; then secure_choose_ports $kafka_alive $redis_alive; fi
    # Explicit ports belong to the caller: the record keeps what it held for them.
    local kafka="$KAFKA_PORT" controller="$CONTROLLER_PORT" redis="$REDIS_PORT"
    [ -z "${FEATDISTILL_KAFKA_PORT:-}" ] || kafka="$REC_KAFKA"
    [ -z "${FEATDISTILL_KAFKA_CONTROLLER_PORT:-}" ] || controller="$REC_CONTROLLER"
    [ -z "${FEATDISTILL_REDIS_PORT:-}" ] || redis="$REC_REDIS"
    { printf 'kafka=%s\ncontroller=%s\nredis=%s\n' "$kafka" "$controller" "$redis"
      secure_record_ports; } >"$PORTS_FILE.tmp"
    mv "$PORTS_FILE.tmp" "$PORTS_FILE"
    exec 7>&-
    set_run_dirs
}

require_ports() {  # what the command needs: kafka and/or redis
    local name
    for name in "$@"; do
        case "$name" in
            kafka) [ -n "$KAFKA_PORT" ] && [ -n "$CONTROLLER_PORT" ] && continue ;;
            redis) [ -n "$REDIS_PORT" ] && continue ;;
        esac
        die "no $name port recorded in $SERVICES_DIR: run 'bash $0 start' first" \
            "(or set FEATDISTILL_KAFKA_PORT, FEATDISTILL_KAFKA_CONTROLLER_PORT, FEATDISTILL_REDIS_PORT)"
    done
}

# ---------------------------------------------------------------- install
# shellcheck source=deploy/local/install.sh
source "$REPO/deploy/local/install.sh"

# ---------------------------------------------------------------- kafka
kafka_healthy() {
    live_pid "$KAFKA_RUN/kafka.pid" "$KAFKA_CMDLINE" >/dev/null && port_open "$KAFKA_PORT" &&
        grep -q "Kafka Server started" "$KAFKA_RUN/kafka.log" 2>/dev/null
}

write_kafka_config() {
    cat >"$KAFKA_RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_RUN/data
num.partitions=$KAFKA_PARTITIONS
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
EOF
    if secure_wanted; then secure_kafka_config; fi
}

start_kafka() {
    local changed=0; secure_mode_changed "$KAFKA_RUN/server.properties" SASL_SSL && changed=1
    if [ $changed = 0 ] && kafka_healthy; then log "kafka already running on 127.0.0.1:$KAFKA_PORT"; return 0; fi
    terminate "$KAFKA_RUN/kafka.pid" "$KAFKA_CMDLINE" 30 kafka  # half-started leftover, if any
    local port ports=("$KAFKA_PORT" "$CONTROLLER_PORT")
    if secure_wanted; then ports+=("$SASL_SSL_PORT" "$MTLS_PORT"); fi
    for port in "${ports[@]}"; do
        port_open "$port" && die "port $port is taken by a process we did not start" \
            "(another checkout's services? pick another FEATDISTILL_*_PORT, or unset it)"
    done
    install_kafka
    mkdir -p "$KAFKA_RUN"
    # Data left by a crash (not by 'stop --keep-data') is dropped: every start is a fresh
    # cluster, and a reused one makes the broker wait out its old registration (~10 s).
    [ -f "$KAFKA_RUN/keep-data" ] && [ $changed = 0 ] || rm -rf "$KAFKA_RUN/data"
    rm -f "$KAFKA_RUN/keep-data"
    write_kafka_config
    local java=(java -Xmx512m -Xms256m -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        -Dorg.slf4j.simpleLogger.showDateTime=true
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS"
        -cp "$KAFKA_LIBS/*")
    if [ ! -f "$KAFKA_RUN/data/meta.properties" ]; then
        # With static controller.quorum.voters the format takes no --standalone
        # (that flag is for the dynamic controller.quorum.bootstrap.servers setup).
        local cluster_id scram=(); if secure_wanted; then mapfile -t scram < <(secure_format_args); fi
        cluster_id="$("${java[@]}" kafka.tools.StorageTool random-uuid </dev/null 2>/dev/null | tail -n 1)"
        "${java[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$KAFKA_RUN/server.properties" "${scram[@]}" </dev/null >"$KAFKA_RUN/format.log" 2>&1 ||
            fail_with_log "$KAFKA_RUN/format.log" "kafka storage format failed"
    fi
    log "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log $KAFKA_RUN/kafka.log)"
    # setsid: survive the caller's Ctrl-C / process-group kill. The inner shell writes its
    # own pid then execs java, so the pid file is right however setsid forks. 8/9>&-: never
    # let the daemon inherit (and hold) our lock descriptors.
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_RUN/kafka.pid" "${java[@]}" kafka.Kafka \
        "$KAFKA_RUN/server.properties" </dev/null >"$KAFKA_RUN/kafka.log" 2>&1 8>&- 9>&- &
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
        sleep 0.5
        kafka_healthy && { log "kafka up after $((SECONDS - t0))s"; return 0; }
        # (the pid file is written by the child; give it a moment before trusting its absence)
        [ $((SECONDS - t0)) -ge 2 ] && ! live_pid "$KAFKA_RUN/kafka.pid" "$KAFKA_CMDLINE" >/dev/null &&
            fail_with_log "$KAFKA_RUN/kafka.log" "kafka exited during startup"
    done
    fail_with_log "$KAFKA_RUN/kafka.log" "kafka not healthy after ${START_TIMEOUT}s"
}

stop_kafka() {  # [--keep-data]
    terminate "$KAFKA_RUN/kafka.pid" "$KAFKA_CMDLINE" 30 kafka
    # A fresh cluster per start: no topics or offsets left over from the last run.
    if [ "${1:-}" = --keep-data ]; then
        [ ! -d "$KAFKA_RUN/data" ] || touch "$KAFKA_RUN/keep-data"
    else rm -rf "$KAFKA_RUN/data"; fi
}

# ---------------------------------------------------------------- redis
redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
# Ours, not merely a Redis: another checkout's may answer PING on an explicit port.
redis_healthy() { live_pid "$REDIS_RUN/redis.pid" redis-server >/dev/null && redis_ping; }

start_redis() {
    install_redis
    if ! secure_mode_changed "$REDIS_RUN/redis.conf" tls-port && redis_healthy; then
        log "redis already running on 127.0.0.1:$REDIS_PORT"; return 0
    fi
    stop_redis  # a leftover that no longer answers, or one in the other mode, if any
    # A daemonizing redis-server exits 0 even when the port is taken: check first.
    local port; for port in "$REDIS_PORT" $(! secure_wanted || echo "$REDIS_TLS_PORT"); do
        port_open "$port" && die "port $port is taken by a process we did not start" \
            "(another checkout's redis? pick another FEATDISTILL_REDIS_PORT, or unset it)"
    done
    mkdir -p "$REDIS_RUN"
    # Our own config and daemon, not Debian's system service; a cache needs no persistence.
    cat >"$REDIS_RUN/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_RUN/redis.pid
logfile $REDIS_RUN/redis.log
dir $REDIS_RUN
save ""
appendonly no
$(! secure_wanted || secure_redis_config)
EOF
    log "starting redis on 127.0.0.1:$REDIS_PORT"
    redis-server "$REDIS_RUN/redis.conf" </dev/null 8>&- 9>&- ||
        fail_with_log "$REDIS_RUN/redis.log" "redis-server failed to start"
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
        redis_ping && return 0
        sleep 0.2
    done
    fail_with_log "$REDIS_RUN/redis.log" "redis did not answer PING after ${START_TIMEOUT}s"
}

stop_redis() { terminate "$REDIS_RUN/redis.pid" redis-server 15 redis; }

# ---------------------------------------------------------------- commands
print_env() {
    require_ports kafka redis
    printf 'export FEATDISTILL_KAFKA_BOOTSTRAP=127.0.0.1:%s\nexport FEATDISTILL_REDIS_URL=redis://127.0.0.1:%s/0\n' \
        "$KAFKA_PORT" "$REDIS_PORT"
    secure_env
}

status() {
    local rc=0
    if [ -n "$KAFKA_PORT" ] && kafka_healthy; then echo "kafka: running on 127.0.0.1:$KAFKA_PORT"
    else echo "kafka: stopped"; rc=1; fi
    if [ -n "$REDIS_PORT" ] && command -v redis-cli >/dev/null && redis_healthy; then
        echo "redis: running on 127.0.0.1:$REDIS_PORT"
    else echo "redis: stopped"; rc=1; fi
    echo "state: $SERVICES_DIR"
    return "$rc"
}

stop() {  # [--keep-data]
    [ -z "${1:-}" ] || [ "$1" = --keep-data ] || die "stop: unknown option $1"
    if [ -n "$KAFKA_PORT" ]; then stop_kafka "${1:-}"; fi
    if [ -n "$REDIS_PORT" ]; then stop_redis; fi
    rm -f "$SECURE_DIR.on"
}

# Tools that talk to a broker get this checkout's unless the arguments name one. Only the
# org.apache.kafka.tools classes, and right after the class: where a tool wants the option
# after a subcommand (ClusterTool), pass --bootstrap-server yourself.
kafka_class() {  # CLASS [ARGS...]
    install_kafka
    local arg named=0
    for arg in "$@"; do
        case "$arg" in --bootstrap-server* | --bootstrap-controller* | --broker-list*) named=1 ;; esac
    done
    if [ "$named" = 0 ] && [ -n "$KAFKA_PORT" ] && [[ "${1:-}" == org.apache.kafka.tools.* ]]; then
        set -- "$1" --bootstrap-server "127.0.0.1:$KAFKA_PORT" "${@:2}"
    fi
    exec java -Xmx256m -cp "$KAFKA_LIBS/*" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn "$@"
}

# start/stop from a test run and a demo at once must not race on the same pid files.
lock_services() { mkdir -p "$SERVICES_DIR"; exec 9>"$SERVICES_DIR/.lock"; flock 9; }

cmd="${1:-}"; shift || true
case "$cmd" in
    install) install_kafka; install_redis ;;
    start) lock_services; [ "${1:-}" != --secure ] || { SECURE=1; secure_certs; touch "$SECURE_DIR.on"; }
        install_kafka; install_redis; choose_ports; start_kafka; start_redis ;;
    stop) lock_services; load_ports; stop "$@" ;;
    start-redis) lock_services; install_redis; choose_ports; start_redis ;;
    stop-redis) lock_services; load_ports; if [ -n "$REDIS_PORT" ]; then stop_redis; fi ;;
    # Only the broker (bench/fault_injection.py restarts it with --keep-data: topics and offsets
    # survive, as they do when a real broker restarts).
    start-kafka) lock_services; install_kafka; choose_ports; start_kafka ;;
    stop-kafka) lock_services; load_ports
        [ -z "${1:-}" ] || [ "$1" = --keep-data ] || die "stop-kafka: unknown option $1"
        if [ -n "$KAFKA_PORT" ]; then stop_kafka "${1:-}"; fi ;;
    status) load_ports; status ;;
    env) load_ports; print_env ;;
    kafka-class) load_ports; kafka_class "$@" ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
