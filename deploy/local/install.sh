# Installs what deploy/local/services.sh runs: the Kafka jars from Maven Central (cached outside
# the clone, shared by every checkout) and Debian's redis-server. Sourced by services.sh, not run.
# shellcheck shell=bash

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
