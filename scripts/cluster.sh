#!/usr/bin/env bash
# A local Spark standalone cluster (one master, N workers) on 127.0.0.1, run from the
# spark-class that ships inside the pyspark package of the project's virtualenv.
#
#   scripts/cluster.sh up       start the master and the workers, wait until all are registered
#   scripts/cluster.sh status   print pids, the master's state and its registered workers
#   scripts/cluster.sh down     stop the master, then the workers and their executors
#
# Settings (environment variables; `make cluster-up WORKERS=1` passes them through):
#   WORKERS=2  WORKER_CORES=1  WORKER_MEMORY=1g  MASTER_PORT=17077  MASTER_UI_PORT=17080
#   WORKER_UI_PORT=17081 (worker i on WORKER_UI_PORT+i-1; 0: any free port)  CLUSTER_DIR=data/cluster
#   CLUSTER_TIMEOUT=180 (seconds `up` waits for the master and the workers)  VENV=.venv
#
# Logs, pid files and the workers' scratch directories (executor logs) live under CLUSTER_DIR.
# Jobs reach the cluster with --master spark://127.0.0.1:$MASTER_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(cd "$ROOT" && cd "${VENV:-.venv}" && pwd)
PY=$VENV/bin/python
WORKERS=${WORKERS:-2}
WORKER_CORES=${WORKER_CORES:-1}
WORKER_MEMORY=${WORKER_MEMORY:-1g}
MASTER_PORT=${MASTER_PORT:-17077}
MASTER_UI_PORT=${MASTER_UI_PORT:-17080}
WORKER_UI_PORT=${WORKER_UI_PORT:-17081}
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-180}
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/data/cluster}
case $CLUSTER_DIR in /*) ;; *) CLUSTER_DIR=$ROOT/$CLUSTER_DIR ;; esac
CLUSTER_DIR=$(realpath -m "$CLUSTER_DIR") # canonical: executors are found by their working directory

MASTER_URL=spark://127.0.0.1:$MASTER_PORT
MASTER_UI=http://127.0.0.1:$MASTER_UI_PORT
LOGS=$CLUSTER_DIR/logs
PIDS=$CLUSTER_DIR/pids

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

[[ -x $PY ]] || die "no virtualenv at $VENV (run 'make install' first, or set VENV)"
# The pyspark wheel is a complete Spark distribution (jars/, bin/spark-class, no sbin/start-*.sh).
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(os.path.realpath(pyspark.__file__)))')
export SPARK_HOME
# Everything binds to loopback and every driver, executor and Python worker started from here
# runs the virtualenv's interpreter, which has fleetgen_spark, numpy and pyarrow.
export SPARK_LOCAL_IP=127.0.0.1 SPARK_MASTER_HOST=127.0.0.1
export PYSPARK_PYTHON=$PY
export SPARK_DAEMON_MEMORY=${SPARK_DAEMON_MEMORY:-512m}
# The master's REST submission server (port 6066) takes jobs without authentication and would
# clash between two local clusters; jobs reach the master through spark://.
export SPARK_MASTER_OPTS="${SPARK_MASTER_OPTS:-} -Dspark.master.rest.enabled=false"
# Each executor copies the driver's jars (Delta, ~86 MB) into CLUSTER_DIR/work/<worker>/<app>/:
# remove the directories of applications that finished more than an hour ago.
export SPARK_WORKER_OPTS="${SPARK_WORKER_OPTS:-} -Dspark.worker.cleanup.enabled=true \
-Dspark.worker.cleanup.interval=600 -Dspark.worker.cleanup.appDataTtl=3600"
# pyspark ships no conf/; keep any SPARK_CONF_DIR of the caller's own Spark out of ours.
unset SPARK_CONF_DIR

# The pid in a pid file if that process is still the daemon we started (pids get reused).
live_pid() {
    local file=$PIDS/$1.pid pid args
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    args=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
    [[ $args == *"$2"* ]] || return 1
    echo "$pid"
}

# One line of the master's JSON status: "<status> <alive workers>", or nothing if it does not answer.
master_state() {
    "$PY" - "$MASTER_UI/json/" <<'EOF' 2>/dev/null || true
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    s = json.load(r)
print(s.get("status"), sum(1 for w in s.get("workers", []) if w.get("state") == "ALIVE"))
EOF
}

port_free() {
    "$PY" - "$1" <<'EOF'
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0 else 1)
EOF
}

start_daemon() { # name, then the spark-class arguments
    local name=$1
    shift
    # setsid: the daemon survives the shell (and a Ctrl-C in it) that started it. The inner shell
    # writes its own pid, which spark-class and then java keep (each execs the next).
    rm -f "$PIDS/$name.pid"
    # shellcheck disable=SC2016 # $$, $1 and $@ are the inner shell's
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' start "$PIDS/$name.pid" "$SPARK_HOME/bin/spark-class" "$@" \
        >"$LOGS/$name.log" 2>&1 </dev/null &
    local i
    for ((i = 0; i < 100; i++)); do
        if [[ -s $PIDS/$name.pid ]]; then return 0; fi
        sleep 0.1
    done
    die "$name did not start; see $LOGS/$name.log"
}

cmd_up() {
    mkdir -p "$LOGS" "$PIDS" "$CLUSTER_DIR/work"
    if live_pid master "deploy.master.Master" >/dev/null; then
        echo "master already running ($MASTER_URL)"
    else
        # Spark would silently move a busy port up by one; the workers would then miss the master.
        local port
        for port in "$MASTER_PORT" "$MASTER_UI_PORT"; do
            port_free "$port" || die "port $port on 127.0.0.1 is in use; pick others (MASTER_PORT, MASTER_UI_PORT)"
        done
        start_daemon master org.apache.spark.deploy.master.Master \
            --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_UI_PORT"
    fi
    local i
    for ((i = 1; i <= WORKERS; i++)); do
        if live_pid "worker-$i" "deploy.worker.Worker" >/dev/null; then
            echo "worker-$i already running"
            continue
        fi
        start_daemon "worker-$i" org.apache.spark.deploy.worker.Worker \
            --host 127.0.0.1 --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" \
            --webui-port $((WORKER_UI_PORT ? WORKER_UI_PORT + i - 1 : 0)) --work-dir "$CLUSTER_DIR/work/worker-$i" "$MASTER_URL"
    done
    wait_ready
}

wait_ready() {
    local deadline=$((SECONDS + CLUSTER_TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        live_pid master "deploy.master.Master" >/dev/null ||
            die "the master exited; see $LOGS/master.log: $(tail -n 5 "$LOGS/master.log" 2>/dev/null)"
        state=$(master_state)
        if [[ $state == "ALIVE "* && ${state#ALIVE } -ge $WORKERS ]]; then
            echo "cluster up: $MASTER_URL (UI $MASTER_UI), ${state#ALIVE } workers x $WORKER_CORES core(s), $WORKER_MEMORY"
            echo "logs and pids: $CLUSTER_DIR"
            return 0
        fi
        sleep 1
    done
    die "after ${CLUSTER_TIMEOUT}s the master reports '${state:-no answer}' (want ALIVE and $WORKERS workers); logs in $LOGS"
}

stop_daemon() { # name, pattern
    local pid
    pid=$(live_pid "$1" "$2") || {
        rm -f "$PIDS/$1.pid"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$1 ($pid) ignored SIGTERM for 30 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$1.pid"
    echo "stopped $1 ($pid)"
}

# Executors of this cluster still running: they run in CLUSTER_DIR/work/<worker>/<app>/<id>.
stray_executors() {
    local pid
    for pid in $(pgrep -f CoarseGrainedExecutorBackend || true); do
        [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$CLUSTER_DIR/work/"* ]] && echo "$pid"
    done
    return 0
}

cmd_down() {
    local f name pid
    # The master first: with it gone, no worker is asked to replace an executor that a stopping
    # worker has just killed. Then every worker that has a pid file, whatever WORKERS is now.
    stop_daemon master "deploy.master.Master"
    for f in "$PIDS"/worker-*.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        stop_daemon "$name" "deploy.worker.Worker"
    done
    # A worker kills its executors as it exits; one it launched while exiting may be left behind.
    for pid in $(stray_executors); do
        echo "stopping executor $pid left by a worker"
        kill -TERM "$pid" 2>/dev/null || true
    done
}

cmd_status() {
    local f name pid running=0
    for f in "$PIDS"/master.pid "$PIDS"/worker-*.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        if pid=$(live_pid "$name" "deploy"); then
            echo "$name: running (pid $pid)"
            running=1
        else
            echo "$name: not running (stale pid file)"
        fi
    done
    local state
    state=$(master_state)
    if [[ -n $state ]]; then
        echo "master $MASTER_URL: ${state%% *}, ${state#* } alive worker(s); UI $MASTER_UI"
    else
        echo "master $MASTER_URL: not answering on $MASTER_UI"
    fi
    ((running)) || return 3
}

[[ $# -eq 1 ]] || set -- help # settings are environment variables: WORKERS=1 scripts/cluster.sh up
case $1 in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
