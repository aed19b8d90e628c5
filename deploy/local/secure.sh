# Optional secured listeners for deploy/local/services.sh ('start --secure'); sourced by it, not
# run. With them the broker also listens for SASL_SSL (SCRAM-SHA-256/512 and PLAIN users) and SSL
# with required client certificates (mTLS), and Redis also listens for TLS with an ACL user. The
# plain listeners stay as they are, so every test keeps using them.
#
# Certificates and passwords are made here at start time, with openssl, into this checkout's
# state dir ($SERVICES_DIR/secure: never in the checkout): a CA, one server certificate for
# 127.0.0.1/localhost used by the broker and Redis, a client certificate for mTLS, and a second
# CA that signed nothing (tests use it as "an unknown CA").
# shellcheck shell=bash

SECURE_DIR="$SERVICES_DIR/secure"
SECURE_USER=featdistill
SECURE_DAYS=30

secure_wanted() { [ "${SECURE:-0}" = 1 ]; }

# The secured ports are recorded beside the plain ones and picked the same way.
secure_load_ports() {
    SASL_SSL_PORT="${FEATDISTILL_KAFKA_SASL_SSL_PORT:-$(recorded_port sasl_ssl)}"
    MTLS_PORT="${FEATDISTILL_KAFKA_MTLS_PORT:-$(recorded_port mtls)}"
    REDIS_TLS_PORT="${FEATDISTILL_REDIS_TLS_PORT:-$(recorded_port redis_tls)}"
}

secure_choose_ports() {  # kafka-alive redis-alive
    [ -n "${FEATDISTILL_KAFKA_SASL_SSL_PORT:-}" ] || keep_port "$SASL_SSL_PORT" "$1" "kafka sasl_ssl" ||
        SASL_SSL_PORT="$(pick_port "$SASL_SSL_PORT" "$MTLS_PORT" "$REDIS_TLS_PORT")"
    [ -n "${FEATDISTILL_KAFKA_MTLS_PORT:-}" ] || keep_port "$MTLS_PORT" "$1" "kafka mtls" ||
        MTLS_PORT="$(pick_port "$SASL_SSL_PORT" "$MTLS_PORT" "$REDIS_TLS_PORT")"
    [ -n "${FEATDISTILL_REDIS_TLS_PORT:-}" ] || keep_port "$REDIS_TLS_PORT" "$2" "redis tls" ||
        REDIS_TLS_PORT="$(pick_port "$SASL_SSL_PORT" "$MTLS_PORT" "$REDIS_TLS_PORT")"
}

secure_record_ports() {  # explicit ports belong to the caller: keep what the record held
    local sasl="$SASL_SSL_PORT" mtls="$MTLS_PORT" tls="$REDIS_TLS_PORT"
    [ -z "${FEATDISTILL_KAFKA_SASL_SSL_PORT:-}" ] || sasl="$(recorded_port sasl_ssl)"
    [ -z "${FEATDISTILL_KAFKA_MTLS_PORT:-}" ] || mtls="$(recorded_port mtls)"
    [ -z "${FEATDISTILL_REDIS_TLS_PORT:-}" ] || tls="$(recorded_port redis_tls)"
    [ -z "$sasl$mtls$tls" ] || printf 'sasl_ssl=%s\nmtls=%s\nredis_tls=%s\n' "$sasl" "$mtls" "$tls"
}

# ---------------------------------------------------------------- certificates and passwords
sign() {  # name subject san: a key and a certificate signed by our CA
    openssl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "$SECURE_DIR/$1.key" \
        -out "$SECURE_DIR/$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\n' "$3" >"$SECURE_DIR/$1.ext"
    openssl x509 -req -in "$SECURE_DIR/$1.csr" -CA "$SECURE_DIR/ca.crt" -CAkey "$SECURE_DIR/ca.key" \
        -CAcreateserial -days "$SECURE_DAYS" -extfile "$SECURE_DIR/$1.ext" \
        -out "$SECURE_DIR/$1.crt" 2>/dev/null
    rm -f "$SECURE_DIR/$1.csr" "$SECURE_DIR/$1.ext"
}

# Made once per checkout, again when a day from expiry; a broker or Redis already running keeps
# the old files open until it restarts, which 'start --secure' does when it remakes them.
secure_certs() {
    command -v openssl >/dev/null || die "--secure needs openssl"
    if [ -f "$SECURE_DIR/.complete" ] &&
        openssl x509 -checkend 86400 -noout -in "$SECURE_DIR/server.crt" >/dev/null 2>&1; then
        return 0
    fi
    log "making a local CA, certificates and passwords in $SECURE_DIR"
    rm -rf "$SECURE_DIR"; mkdir -p "$SECURE_DIR"; chmod 700 "$SECURE_DIR"
    local ca
    for ca in ca other-ca; do
        openssl req -x509 -newkey rsa:2048 -nodes -days "$SECURE_DAYS" \
            -subj "/CN=featdistill local $ca" -keyout "$SECURE_DIR/$ca.key" \
            -out "$SECURE_DIR/$ca.crt" 2>/dev/null || die "openssl could not make $ca"
    done
    sign server "/CN=localhost" "IP:127.0.0.1,DNS:localhost"
    sign client "/CN=$SECURE_USER" "DNS:$SECURE_USER"
    openssl rand -hex 16 >"$SECURE_DIR/kafka.password"
    openssl rand -hex 16 >"$SECURE_DIR/redis.password"
    openssl rand -hex 16 >"$SECURE_DIR/keystore.password"
    # The broker reads a PKCS12 keystore (a PEM key file would need an encrypted PKCS8 key).
    openssl pkcs12 -export -in "$SECURE_DIR/server.crt" -inkey "$SECURE_DIR/server.key" \
        -certfile "$SECURE_DIR/ca.crt" -name server -out "$SECURE_DIR/server.p12" \
        -passout "file:$SECURE_DIR/keystore.password" || die "openssl could not make the keystore"
    chmod 600 "$SECURE_DIR"/*
    touch "$SECURE_DIR/.complete"
}

# ---------------------------------------------------------------- kafka
# Adds the secured listeners to the server.properties that write_kafka_config wrote.
secure_kafka_config() {
    local props="$KAFKA_RUN/server.properties" pw store
    pw="$(cat "$SECURE_DIR/kafka.password")"; store="$(cat "$SECURE_DIR/keystore.password")"
    sed -i -e "s|^listeners=.*|&,SASL_SSL://127.0.0.1:$SASL_SSL_PORT,SSL://127.0.0.1:$MTLS_PORT|" \
        -e "s|^advertised.listeners=.*|&,SASL_SSL://127.0.0.1:$SASL_SSL_PORT,SSL://127.0.0.1:$MTLS_PORT|" \
        -e "s|^listener.security.protocol.map=.*|&,SASL_SSL:SASL_SSL,SSL:SSL|" "$props"
    cat >>"$props" <<EOF
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SECURE_USER="$pw";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.ssl.ssl.client.auth=required
ssl.keystore.type=PKCS12
ssl.keystore.location=$SECURE_DIR/server.p12
ssl.keystore.password=$store
ssl.key.password=$store
ssl.truststore.type=PEM
ssl.truststore.location=$SECURE_DIR/ca.crt
EOF
}

# SCRAM users live in the cluster metadata: written by 'kafka-storage format --add-scram'.
secure_format_args() {
    local pw; pw="$(cat "$SECURE_DIR/kafka.password")"
    printf '%s\n' --add-scram "SCRAM-SHA-256=[name=$SECURE_USER,password=$pw]" \
        --add-scram "SCRAM-SHA-512=[name=$SECURE_USER,password=$pw]"
}

# A running broker or Redis started in the other mode (or before the certificates were remade)
# must restart. Kafka also drops its data then: a plain cluster has no SCRAM users.
secure_mode_changed() {  # config-file marker
    [ -f "$1" ] || return 1
    if secure_wanted; then
        ! grep -q "$2" "$1" || [ "$SECURE_DIR/.complete" -nt "$1" ]
    else grep -q "$2" "$1"; fi
}

# ---------------------------------------------------------------- redis
# The TLS port beside the plain one. The default user keeps working without a password on the
# plain port (the other tests); the ACL user is what a secured client logs in as.
secure_redis_config() {
    cat <<EOF
tls-port $REDIS_TLS_PORT
tls-cert-file $SECURE_DIR/server.crt
tls-key-file $SECURE_DIR/server.key
tls-ca-cert-file $SECURE_DIR/ca.crt
tls-auth-clients optional
user $SECURE_USER on >$(cat "$SECURE_DIR/redis.password") ~* &* +@all
EOF
}

secure_env() {
    grep -q SASL_SSL "$KAFKA_RUN/server.properties" 2>/dev/null || return 0
    printf 'export FEATDISTILL_LOCAL_SECURE_DIR=%s\n' "$SECURE_DIR"
    printf 'export FEATDISTILL_LOCAL_KAFKA_SASL_SSL=127.0.0.1:%s\n' "$SASL_SSL_PORT"
    printf 'export FEATDISTILL_LOCAL_KAFKA_MTLS=127.0.0.1:%s\n' "$MTLS_PORT"
    grep -q tls-port "$REDIS_RUN/redis.conf" 2>/dev/null &&
        printf 'export FEATDISTILL_LOCAL_REDIS_TLS=rediss://127.0.0.1:%s/0\n' "$REDIS_TLS_PORT"
    return 0
}
