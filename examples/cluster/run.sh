#!/usr/bin/env bash
# Start the example kwire cluster: one ZooKeeper (Debian's `zookeeper` package) and three
# brokers (broker1..3.properties), each in the background, logging under
# /tmp/kwire-cluster/logs (a broker's log starts afresh with each run). Waits until each
# one answers, then stays in the foreground; Ctrl-C (or SIGTERM) stops the brokers one at
# a time, then ZooKeeper.
#
# Environment:
#   KWIRE            the kwire command (default: `kwire` on PATH, else the repo's .venv)
#   KWIRE_ZK_PORT    ZooKeeper's client port instead of 2181
#   KWIRE_BASE_PORT  the first broker's port instead of 9092 (the others take the next two)
#
# A broker stopped or restarted by hand (README.md, "Run a cluster") writes its pid to
# /tmp/kwire-cluster/brokerN.pid, so Ctrl-C here stops the restarted one too.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=/tmp/kwire-cluster  # the configs' dataDir and log.dirs live here
logs=$root/logs
zk_port=${KWIRE_ZK_PORT:-2181}
base_port=${KWIRE_BASE_PORT:-9092}
java_dir=/usr/share/java
# zookeeper.jar's manifest names its own dependencies; log4j 1.2 is the one SLF4J binding
# added (with all of /usr/share/java/* SLF4J would pick among several at random).
zk_classpath=$java_dir/zookeeper.jar:$java_dir/slf4j-log4j12.jar:$java_dir/log4j-1.2.jar

if [[ -z ${KWIRE:-} ]]; then
    if command -v kwire >/dev/null; then
        KWIRE=kwire
    elif [[ -x $here/../../.venv/bin/kwire ]]; then
        KWIRE=$(cd "$here/../.." && pwd)/.venv/bin/kwire
    else
        echo "run.sh: no kwire command (pip install -e . in a venv, or set KWIRE)" >&2
        exit 1
    fi
fi
if ! command -v java >/dev/null || [[ ! -f $java_dir/zookeeper.jar ]]; then
    echo "run.sh: ZooKeeper is not installed (apt-get install zookeeper, and a JDK)" >&2
    exit 1
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$zk_port" "$base_port" $((base_port + 1)) $((base_port + 2)); do
    if port_busy "$port"; then
        echo "run.sh: 127.0.0.1:$port is in use; set KWIRE_ZK_PORT / KWIRE_BASE_PORT" >&2
        exit 1
    fi
done

# A ZooKeeper four-letter word (`ruok`, `srvr`); empty if it does not answer.
four_letter_word() {
    (exec 3<>"/dev/tcp/127.0.0.1/$zk_port" && printf %s "$1" >&3 && timeout 2 cat <&3) 2>/dev/null || true
}

zk_pid=
stop_all() {
    trap - INT TERM EXIT
    echo
    # One broker at a time: each one's SIGTERM is a controlled shutdown that moves its
    # leaderships to the others, which needs ZooKeeper and the brokers still running.
    for i in 3 2 1; do
        pid=$(cat "$root/broker$i.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            echo "stopping broker $i (pid $pid)"
            kill -TERM "$pid"
            for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$root/broker$i.pid"
    done
    if [[ -n $zk_pid ]] && kill -0 "$zk_pid" 2>/dev/null; then
        echo "stopping ZooKeeper (pid $zk_pid)"
        kill -TERM "$zk_pid"
        wait "$zk_pid" 2>/dev/null || true
    fi
    echo "stopped; the data is kept in $root (rm -rf $root for a fresh cluster)"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$logs"
# The example zoo.cfg, with the chosen port.
sed "s/^clientPort=.*/clientPort=$zk_port/" "$here/zoo.cfg" > "$root/zoo.cfg"
cat > "$root/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=${zookeeper.log.dir}/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n
EOF

echo "starting ZooKeeper on 127.0.0.1:$zk_port"
# A small heap, the serial collector and C1 only: a quick start on a small machine.
java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    "-Dzookeeper.log.dir=$logs" "-Dlog4j.configuration=file:$root/log4j.properties" \
    -cp "$zk_classpath" org.apache.zookeeper.server.quorum.QuorumPeerMain "$root/zoo.cfg" \
    >>"$logs/zookeeper.out" 2>&1 </dev/null &
zk_pid=$!
for _ in $(seq 600); do
    kill -0 "$zk_pid" 2>/dev/null || { echo "run.sh: ZooKeeper exited; see $logs/zookeeper.out" >&2; exit 1; }
    # `ruok` answers as soon as the port is open; `srvr` names a mode once it serves.
    [[ $(four_letter_word srvr) == *Mode:* ]] && break
    sleep 0.1
done
[[ $(four_letter_word srvr) == *Mode:* ]] || { echo "run.sh: ZooKeeper not serving after 60 s" >&2; exit 1; }
echo "  ZooKeeper serving (pid $zk_pid), log $logs/zookeeper.log"

for i in 1 2 3; do
    port=$((base_port + i - 1))
    overrides=()
    if [[ $zk_port != 2181 || $base_port != 9092 ]]; then
        overrides=(--override "listeners=PLAINTEXT://127.0.0.1:$port"
                   --override "zookeeper.connect=127.0.0.1:$zk_port/kwire")
    fi
    echo "starting broker $i on 127.0.0.1:$port"
    : >"$logs/broker$i.log"
    # A session of its own: a broker takes SIGINT as SIGTERM, so Ctrl-C in this terminal
    # must not reach all three at once; stop_all stops them in turn.
    setsid "$KWIRE" serve "$here/broker$i.properties" "${overrides[@]}" >>"$logs/broker$i.log" 2>&1 </dev/null &
    echo $! >"$root/broker$i.pid"
    disown  # a broker killed by hand is no job of this script
done

# Each broker prints "kwire broker N listening on ..." once it serves.
for i in 1 2 3; do
    pid=$(cat "$root/broker$i.pid")
    for _ in $(seq 600); do
        grep -q "listening on" "$logs/broker$i.log" && break
        kill -0 "$pid" 2>/dev/null || { echo "run.sh: broker $i exited; see $logs/broker$i.log" >&2; tail -5 "$logs/broker$i.log" >&2; exit 1; }
        sleep 0.1
    done
    grep -q "listening on" "$logs/broker$i.log" || { echo "run.sh: broker $i not serving after 60 s" >&2; exit 1; }
    echo "  $(grep -m1 "listening on" "$logs/broker$i.log") (pid $pid), log $logs/broker$i.log"
done

cat <<EOF

kwire cluster running: bootstrap.servers=127.0.0.1:$base_port,127.0.0.1:$((base_port + 1)),127.0.0.1:$((base_port + 2))
  see it:   kcat -b 127.0.0.1:$base_port -L
  stop it:  Ctrl-C here (or kill $$); brokers get SIGTERM one at a time, then ZooKeeper
  one broker: kill \$(cat $root/broker2.pid)   # SIGTERM: controlled shutdown
EOF
# `wait` returns at once when a trapped signal arrives; it also returns if a broker dies,
# so wait for ZooKeeper, which lives until stop_all.
wait "$zk_pid" || true
echo "run.sh: ZooKeeper exited; see $logs/zookeeper.out" >&2
