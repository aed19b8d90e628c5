#!/usr/bin/env bash
# Local Apache Kafka (single-node KRaft) and Redis on 127.0.0.1 for tests, CI and the demo.
# No Docker here: Kafka runs from its Maven Central jars, Redis from Debian's redis-server.
#
#   bash deploy/local/services.sh install|start|stop [--keep-data]|status|env
#   bash deploy/local/services.sh start-redis|stop-redis       (tests simulate a Redis outage)
#   bash deploy/local/services.sh kafka-class CLASS [ARGS...]  (run a Kafka tool from the jars)
#   eval "$(bash deploy/local/services.sh env)"
#
# See deploy/local/README.md for the variables.
set -euo pipefail

CACHE="${FEATDISTILL_CACHE:-$HOME/.cache/featdistill}"
KAFKA_VERSION="${FEATDISTILL_KAFKA_VERSION:-4.1.2}"
KAFKA_PORT="${FEATDISTILL_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${FEATDISTILL_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_PARTITIONS="${FEATDISTILL_KAFKA_PARTITIONS:-1}"
REDIS_PORT="${FEATDISTILL_REDIS_PORT:-16379}"
SERVICES_DIR="${FEATDISTILL_SERVICES_DIR:-$CACHE/services}"
START_TIMEOUT="${FEATDISTILL_START_TIMEOUT:-90}"

# Jars are shared by every clone; runtime state is keyed by port so that two setups with
# different ports (parallel CI jobs) never share a pid file or a log dir.
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_RUN="$SERVICES_DIR/kafka-$KAFKA_PORT"
REDIS_RUN="$SERVICES_DIR/redis-$REDIS_PORT"

log() { echo "services: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Pid from a pid file, only if that process is alive and really is what we started
# (pids get recycled; never signal a stranger).
live_pid() {  # pidfile cmdline-pattern
    local pid; [ -s "$1" ] || return 1; pid="$(cat "$1")"
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
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

# ---------------------------------------------------------------- install
install_kafka() {
    [ -f "$KAFKA_HOME/.complete" ] && return 0
    { command -v java && command -v mvn; } >/dev/null || die "needs java (17+) and mvn"
    mkdir -p "$KAFKA_HOME"
    # One installer at a time; a concurrent caller waits, then finds the marker.
    exec 8>"$KAFKA_HOME/.lock" && flock 8
    if [ ! -f "$KAFKA_HOME/.complete" ]; then
        log "fetching kafka_2.13 $KAFKA_VERSION jars with Maven (first run only)"
        rm -rf "$KAFKA_LIBS"
        # kafka-tools brings TopicCommand and the console producer/consumer for checks; its
        # connect-runtime (Jetty, Jersey: ~40 jars) only serves Connect tools, so leave it out.
        cat >"$KAFKA_HOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>featdistill.local</groupId><artifactId>kafka-runtime</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions>
    </dependency>
  </dependencies>
</project>
EOF
        local mvn=(mvn -B -f "$KAFKA_HOME/pom.xml") plugin=org.apache.maven.plugins:maven-dependency-plugin:3.6.1
        "${mvn[@]}" "$plugin:copy-dependencies" -DincludeScope=runtime \
            -DoutputDirectory="$KAFKA_LIBS" </dev/null >"$KAFKA_HOME/mvn.log" 2>&1 ||
            fail_with_log "$KAFKA_HOME/mvn.log" "maven could not fetch kafka $KAFKA_VERSION"
        # Kafka only ships slf4j-api; without a binding the broker logs nothing. Pick the
        # slf4j-simple that matches the resolved API (1.7.x and 2.x bind differently).
        local api slf4j_version
        api="$(find "$KAFKA_LIBS" -name 'slf4j-api-*.jar' | head -n 1)"
        [ -n "$api" ] || die "no slf4j-api among the resolved jars"
        slf4j_version="$(basename "$api" .jar)"; slf4j_version="${slf4j_version#slf4j-api-}"
        "${mvn[@]}" "$plugin:copy" -Dartifact="org.slf4j:slf4j-simple:$slf4j_version" \
            -DoutputDirectory="$KAFKA_LIBS" </dev/null >>"$KAFKA_HOME/mvn.log" 2>&1 ||
            fail_with_log "$KAFKA_HOME/mvn.log" "maven could not fetch slf4j-simple $slf4j_version"
        touch "$KAFKA_HOME/.complete"
        log "kafka $KAFKA_VERSION: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS"
    fi
    exec 8>&-
}

install_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    local sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    log "installing redis-server with apt-get"
    "${sudo[@]}" apt-get update -q </dev/null >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q redis-server </dev/null >&2
}

# ---------------------------------------------------------------- kafka
kafka_healthy() {
    live_pid "$KAFKA_RUN/kafka.pid" kafka.Kafka >/dev/null && port_open "$KAFKA_PORT" &&
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
}

start_kafka() {
    if kafka_healthy; then log "kafka already running on 127.0.0.1:$KAFKA_PORT"; return 0; fi
    terminate "$KAFKA_RUN/kafka.pid" kafka.Kafka 30 kafka  # half-started leftover, if any
    local port
    for port in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
        port_open "$port" && die "port $port is taken by a process we did not start"
    done
    install_kafka
    mkdir -p "$KAFKA_RUN"
    # Data left by a crash (not by 'stop --keep-data') is dropped: every start is a fresh
    # cluster, and a reused one makes the broker wait out its old registration (~10 s).
    [ -f "$KAFKA_RUN/keep-data" ] || rm -rf "$KAFKA_RUN/data"
    rm -f "$KAFKA_RUN/keep-data"
    write_kafka_config
    local java=(java -Xmx512m -Xms256m -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        -Dorg.slf4j.simpleLogger.showDateTime=true
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS"
        -cp "$KAFKA_LIBS/*")
    if [ ! -f "$KAFKA_RUN/data/meta.properties" ]; then
        # With static controller.quorum.voters the format takes no --standalone
        # (that flag is for the dynamic controller.quorum.bootstrap.servers setup).
        local cluster_id; cluster_id="$("${java[@]}" kafka.tools.StorageTool random-uuid </dev/null 2>/dev/null | tail -n 1)"
        "${java[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$KAFKA_RUN/server.properties" </dev/null >"$KAFKA_RUN/format.log" 2>&1 ||
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
        [ $((SECONDS - t0)) -ge 2 ] && ! live_pid "$KAFKA_RUN/kafka.pid" kafka.Kafka >/dev/null &&
            fail_with_log "$KAFKA_RUN/kafka.log" "kafka exited during startup"
    done
    fail_with_log "$KAFKA_RUN/kafka.log" "kafka not healthy after ${START_TIMEOUT}s"
}

stop_kafka() {  # [--keep-data]
    terminate "$KAFKA_RUN/kafka.pid" kafka.Kafka 30 kafka
    # A fresh cluster per start: no topics or offsets left over from the last run.
    if [ "${1:-}" = --keep-data ]; then
        [ ! -d "$KAFKA_RUN/data" ] || touch "$KAFKA_RUN/keep-data"
    else rm -rf "$KAFKA_RUN/data"; fi
}

# ---------------------------------------------------------------- redis
redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_redis() {
    install_redis
    if redis_ping; then log "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
    # A daemonizing redis-server exits 0 even when the port is taken: check first.
    port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by something that is not redis"
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
    printf 'export FEATDISTILL_KAFKA_BOOTSTRAP=127.0.0.1:%s\nexport FEATDISTILL_REDIS_URL=redis://127.0.0.1:%s/0\n' \
        "$KAFKA_PORT" "$REDIS_PORT"
}

status() {
    local rc=0
    if kafka_healthy; then echo "kafka: running on 127.0.0.1:$KAFKA_PORT"; else echo "kafka: stopped"; rc=1; fi
    if command -v redis-cli >/dev/null && redis_ping; then echo "redis: running on 127.0.0.1:$REDIS_PORT"
    else echo "redis: stopped"; rc=1; fi
    return "$rc"
}

# start/stop from a test run and a demo at once must not race on the same pid files.
lock_services() { mkdir -p "$SERVICES_DIR"; exec 9>"$SERVICES_DIR/.lock"; flock 9; }

cmd="${1:-}"; shift || true
case "$cmd" in
    install) install_kafka; install_redis ;;
    start) lock_services; install_kafka; install_redis; start_kafka; start_redis ;;
    stop)
        [ -z "${1:-}" ] || [ "$1" = --keep-data ] || die "stop: unknown option $1"
        lock_services; stop_kafka "${1:-}"; stop_redis ;;
    start-redis) lock_services; start_redis ;;
    stop-redis) lock_services; stop_redis ;;
    status) status ;;
    env) print_env ;;
    kafka-class)
        install_kafka
        exec java -Xmx256m -cp "$KAFKA_LIBS/*" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn "$@" ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
