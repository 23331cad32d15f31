# shellcheck shell=bash
# Small helpers shared by scripts/services and scripts/kafka_broker (via scripts/lib/kafka.sh).
# Sourced, never executed: it only defines variables and functions.

# Repository root, whatever the caller's working directory is.
# shellcheck disable=SC2034 # used by the scripts that source this file
TS_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Prefix of every message, so output interleaved with make/pytest shows who spoke.
: "${TS_LOG_PREFIX:=services}"

ts_log() { printf '[%s] %s\n' "$TS_LOG_PREFIX" "$*" >&2; }

ts_die() {
    ts_log "ERROR: $*"
    exit 1
}

# ts_die_with_log MESSAGE FILE...: fail naming the log file(s) and showing their last
# 30 lines, so a failed start in CI can be diagnosed from the output alone.
ts_die_with_log() {
    local msg=$1 f
    shift
    ts_log "ERROR: $msg"
    for f in "$@"; do
        if [[ -s $f ]]; then
            printf -- '----- last 30 lines of %s -----\n' "$f" >&2
            tail -n 30 "$f" >&2
            printf -- '----- end of %s -----\n' "$f" >&2
        else
            ts_log "(log file $f is missing or empty)"
        fi
    done
    exit 1
}

# ts_pid_alive PID [MATCH]: true if PID runs, is not a zombie (a child we started that
# already died stays a zombie until we exit, and kill -0 still succeeds on it), and its
# command line contains MATCH (guards against a recycled pid from a stale pid file).
ts_pid_alive() {
    local pid=$1 match=${2:-} state cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]] || return 1
    if [[ -n $match ]]; then
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
        [[ $cmdline == *"$match"* ]] || return 1
    fi
    return 0
}

# ts_read_pid FILE: print the first line of a pid file (empty if absent).
ts_read_pid() {
    if [[ -r $1 ]]; then head -n 1 "$1" 2>/dev/null | tr -dc '0-9'; fi
}

# ts_port_in_use PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
# Uses bash's /dev/tcp so it needs no extra tool.
ts_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ts_stop_pid PID MATCH TIMEOUT NAME: SIGTERM, wait up to TIMEOUT seconds for the
# process to exit (letting it shut down cleanly), then SIGKILL.
ts_stop_pid() {
    local pid=$1 match=$2 timeout=$3 name=$4 deadline
    ts_pid_alive "$pid" "$match" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while ts_pid_alive "$pid" "$match"; do
        if ((SECONDS >= deadline)); then
            ts_log "$name (pid $pid) did not stop within ${timeout}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
}
