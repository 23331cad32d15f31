# shellcheck shell=bash
# Apache Kafka (KRaft, single combined broker+controller) helpers shared by
# scripts/services (the project's long-running broker) and scripts/kafka_broker
# (throwaway brokers for individual tests). Sourced, never executed.
#
# The broker runs straight from the official jars on Maven Central, fetched once by
# Maven (scripts/kafka/pom.xml) into a cache outside the repository, so a fresh clone
# on the same machine reuses it:  ${TS_KAFKA_CACHE:-~/.cache/taskstream}/kafka-<version>/lib

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KAFKA_SCRIPTS_DIR=$TS_REPO_ROOT/scripts/kafka
# The pom is the single place the version is pinned; TS_KAFKA_VERSION overrides it.
KAFKA_VERSION=${TS_KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_SCRIPTS_DIR/pom.xml")}
KAFKA_CACHE_DIR=${TS_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskstream}/kafka-$KAFKA_VERSION
KAFKA_LIB_DIR=$KAFKA_CACHE_DIR/lib
# Small heap: the machine has 2 cores and little spare memory while the tests run.
KAFKA_HEAP_OPTS=${TS_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
# Interpreter for scripts/kafka_ready.py (the Makefile passes the venv's python).
: "${PYTHON:=python3}"
# The JVM's main class; kafka_pid matches it in /proc/PID/cmdline.
KAFKA_MAIN_CLASS=kafka.Kafka

# kafka_java: the java binary to use (TS_JAVA, else $JAVA_HOME/bin/java, else PATH).
kafka_java() {
    if [[ -n ${TS_JAVA:-} ]]; then
        printf '%s\n' "$TS_JAVA"
    elif [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    else
        command -v java || ts_die "java not found: Kafka $KAFKA_VERSION needs Java 17+ (apt-get install openjdk-17-jre-headless)"
    fi
}

# kafka_check_java: Kafka 4.x brokers refuse to run on Java < 17; say so clearly.
kafka_check_java() {
    local java version major
    java=$(kafka_java)
    version=$("$java" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)
    major=${version%%.*}
    [[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$version") # "1.8.0_x" style
    [[ $major =~ ^[0-9]+$ ]] || ts_die "could not read the Java version from '$java -version'"
    ((major >= 17)) || ts_die "Kafka $KAFKA_VERSION needs Java 17+, but $java is Java $version (set TS_JAVA or JAVA_HOME)"
}

# kafka_ensure_jars: fetch the broker jars with Maven unless the cache is complete.
# Fetches into a temporary folder and renames it at the end, so an interrupted download
# never leaves a half-filled cache; a lock keeps two concurrent callers from racing.
kafka_ensure_jars() {
    [[ -f $KAFKA_LIB_DIR/.complete ]] && return 0
    command -v mvn >/dev/null || ts_die "mvn not found: it is needed once to fetch the Kafka jars (apt-get install maven)"
    mkdir -p "$KAFKA_CACHE_DIR"
    (
        flock -w 600 8 || ts_die "timed out waiting for another Kafka jar download ($KAFKA_CACHE_DIR/.lock)"
        [[ -f $KAFKA_LIB_DIR/.complete ]] && exit 0
        local tmp=$KAFKA_CACHE_DIR/lib.tmp.$$ log=$KAFKA_CACHE_DIR/mvn.log
        rm -rf "$tmp"
        ts_log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIB_DIR (once)"
        if ! mvn -B -q -f "$KAFKA_SCRIPTS_DIR/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
            org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
            rm -rf "$tmp"
            ts_die_with_log "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION" "$log"
        fi
        [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || ts_die_with_log "kafka_2.13-$KAFKA_VERSION.jar missing after the Maven fetch" "$log"
        touch "$tmp/.complete"
        rm -rf "$KAFKA_LIB_DIR"
        mv "$tmp" "$KAFKA_LIB_DIR"
    ) 8>"$KAFKA_CACHE_DIR/.lock"
}

# kafka_render_config OUT NODE_ID PORT CONTROLLER_PORT DATA_DIR: write server.properties
# from the shared template (scripts/kafka/server.properties.template).
kafka_render_config() {
    local out=$1 node_id=$2 port=$3 controller_port=$4 data_dir=$5
    sed -e "s|@NODE_ID@|$node_id|g" -e "s|@PORT@|$port|g" \
        -e "s|@CONTROLLER_PORT@|$controller_port|g" -e "s|@DATA_DIR@|$data_dir|g" \
        "$KAFKA_SCRIPTS_DIR/server.properties.template" >"$out.tmp"
    mv "$out.tmp" "$out"
}

# kafka_random_cluster_id: 16 random bytes as unpadded base64url, the format of
# `kafka-storage random-uuid`, without paying for a JVM start. Kafka rejects ids that
# start with '-' (they look like command-line flags), so draw again in that case.
kafka_random_cluster_id() {
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        [[ $id != -* ]] && break
    done
    printf '%s\n' "$id"
}

# kafka_format CONFIG DATA_DIR CONTROLLER_PORT LOG_DIR: format the KRaft storage unless
# it already is, so a restart keeps its topics and offsets. The single-node quorum
# records the controller endpoint at format time; if the controller port has changed
# since, the old data could never elect a leader, so it is wiped and formatted anew
# (it is test data).
kafka_format() {
    local config=$1 data_dir=$2 controller_port=$3 log_dir=$4 marker log
    marker=$data_dir/.taskstream-controller-port
    log=$log_dir/kafka-storage.log
    if [[ -f $data_dir/meta.properties ]]; then
        [[ $(cat "$marker" 2>/dev/null) == "$controller_port" ]] && return 0
        ts_log "Kafka storage in $data_dir was formatted for another controller port; formatting it anew"
        rm -rf "$data_dir"
    fi
    mkdir -p "$data_dir" "$log_dir"
    # No log4j2 config here: the tool's few log lines go to the console, i.e. into $log.
    if ! "$(kafka_java)" -cp "$KAFKA_LIB_DIR/*" kafka.tools.StorageTool format --standalone \
        --config "$config" --cluster-id "$(kafka_random_cluster_id)" >"$log" 2>&1; then
        ts_die_with_log "formatting Kafka storage in $data_dir failed" "$log"
    fi
    printf '%s\n' "$controller_port" >"$marker"
}

# kafka_pid PID_FILE CONFIG: print the broker's pid and succeed if it is running (the
# pid must belong to a kafka.Kafka JVM started with this very config file).
kafka_pid() {
    local pid
    pid=$(ts_read_pid "$1")
    ts_pid_alive "$pid" "$KAFKA_MAIN_CLASS $2" || return 1
    printf '%s\n' "$pid"
}

# kafka_launch CONFIG LOG_DIR PID_FILE: start the broker JVM in the background.
# setsid detaches it from the caller's process group (Ctrl-C in make or a pytest
# teardown must not take it down); all file descriptors are redirected or closed so a
# caller reading our output through a pipe (e.g. $(...)) does not wait for the broker.
kafka_launch() {
    local config=$1 log_dir=$2 pid_file=$3 java
    java=$(kafka_java)
    mkdir -p "$log_dir"
    rm -f "$pid_file"
    # Each start gets fresh log files (the previous run's are kept as *.1): the
    # readiness fallback greps server.log and must not see an older "started" line.
    local f
    for f in server.log kafka.out; do
        if [[ -f $log_dir/$f ]]; then mv -f "$log_dir/$f" "$log_dir/$f.1"; fi
    done
    # The inner shell writes its own pid, then execs java: the pid file holds the JVM's pid.
    # shellcheck disable=SC2016 # $$ and $0 are for the inner shell
    # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file" \
        "$java" $KAFKA_HEAP_OPTS \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_SCRIPTS_DIR/log4j2.properties" \
        -Dkafka.logs.dir="$log_dir" \
        -cp "$KAFKA_LIB_DIR/*" "$KAFKA_MAIN_CLASS" "$config" \
        </dev/null >>"$log_dir/kafka.out" 2>&1 8>&- 9>&- &
    # Wait (briefly) for the pid file so callers can rely on it.
    local tries=50
    while ((tries-- > 0)); do
        [[ -s $pid_file ]] && return 0
        sleep 0.1
    done
    ts_die "Kafka JVM did not write $pid_file"
}

# kafka_python_ok: true if $PYTHON can import confluent_kafka (needed by kafka_ready.py).
kafka_python_ok() {
    "$PYTHON" -c 'import confluent_kafka' >/dev/null 2>&1
}

# kafka_wait_ready BOOTSTRAP TIMEOUT PID LOG_DIR PARTITIONS [TOPIC...]: wait until the
# broker answers a metadata request (and the topics exist with leaders), or fail with
# the end of its log. Prefers scripts/kafka_ready.py (a real Kafka client); without
# confluent_kafka it falls back to "port open + 'Kafka Server started' in the log".
kafka_wait_ready() {
    local bootstrap=$1 timeout=$2 pid=$3 log_dir=$4 partitions=$5
    shift 5
    local server_log=$log_dir/server.log deadline=$((SECONDS + timeout)) port=${bootstrap##*:}
    if kafka_python_ok; then
        # Run the client in the background so a broker that dies is noticed at once
        # instead of after the whole timeout.
        "$PYTHON" "$TS_REPO_ROOT/scripts/kafka_ready.py" --bootstrap "$bootstrap" \
            --timeout "$timeout" --partitions "$partitions" "$@" 8>&- 9>&- &
        local ready_pid=$! rc
        while kill -0 "$ready_pid" 2>/dev/null; do
            if [[ -n $pid ]] && ! ts_pid_alive "$pid" "$KAFKA_MAIN_CLASS"; then
                kill "$ready_pid" 2>/dev/null || true
                wait "$ready_pid" 2>/dev/null || true
                ts_die_with_log "Kafka on $bootstrap exited during startup" "$server_log" "$log_dir/kafka.out"
            fi
            sleep 0.2
        done
        rc=0
        wait "$ready_pid" || rc=$?
        ((rc == 0)) || ts_die_with_log "Kafka on $bootstrap did not become ready within ${timeout}s (metadata request / topic creation failed)" \
            "$server_log" "$log_dir/kafka.out"
        return 0
    fi
    ts_log "WARNING: $PYTHON cannot import confluent_kafka; waiting for Kafka by its log instead${1:+, topics NOT created: $*}"
    while :; do
        if [[ -n $pid ]] && ! ts_pid_alive "$pid" "$KAFKA_MAIN_CLASS"; then
            ts_die_with_log "Kafka on $bootstrap exited during startup" "$server_log" "$log_dir/kafka.out"
        fi
        if ts_port_in_use "$port" && grep -q 'Kafka Server started' "$server_log" 2>/dev/null; then
            return 0
        fi
        ((SECONDS < deadline)) || ts_die_with_log "Kafka on $bootstrap did not start within ${timeout}s" "$server_log" "$log_dir/kafka.out"
        sleep 0.3
    done
}

# kafka_stop PID_FILE CONFIG TIMEOUT NAME: SIGTERM (controlled shutdown), wait, SIGKILL.
kafka_stop() {
    local pid_file=$1 config=$2 timeout=$3 name=$4 pid
    if pid=$(kafka_pid "$pid_file" "$config"); then
        ts_log "stopping $name (pid $pid)"
        ts_stop_pid "$pid" "$KAFKA_MAIN_CLASS $config" "$timeout" "$name"
    fi
    rm -f "$pid_file"
}
