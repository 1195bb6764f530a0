#!/usr/bin/env bash
# Intake benchmark: Postfix's smtp-source against a Postern instance and against Debian's Postfix,
# both configured the same way, in the same run, on the same file system. See bench/README.md.
#
# Usage: bench/intake.sh [--only postfix|postern] [--reuse] [--no-build] [--results FILE]
#   --only S     measure one system (the table then has no ratio)
#   --reuse      smtp-source -d: several messages per connection (default: one per connection)
#   --no-build   use the Postern binaries already in $CARGO_TARGET_DIR/release (or target/release)
#   --results F  append the table to F (default bench/RESULTS.md; "" appends nowhere)
#
# Environment:
#   BENCH_SESSIONS   parallel sessions to measure          (default "1 10 50")
#   BENCH_MESSAGES   messages per run, per session count   (default "1:2000 10:5000 50:5000")
#   BENCH_REPEAT     runs per system and session count     (default 3; the median is reported)
#   BENCH_SIZE       payload bytes per message             (default 1024)
#   BENCH_DIR        scratch directory (default: a new one under /var/tmp, removed at exit)
#   BENCH_KEEP=1     keep the scratch directory (logs, configuration, queues) after the run
#   BENCH_NICE       nice value for the servers and the load generator (default -10: they
#                    win the CPU against the machine's other work, both systems alike; 0: off)
#   BENCH_POSTERN_USER  run Postern as this user (dev mode: every daemon under that uid, each
#                    still sandboxed) instead of root with a uid per role (default root)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
only=""
reuse=0
build=1
results="$root/bench/RESULTS.md"
while [ $# -gt 0 ]; do
    case "$1" in
    --only) only="${2:-}"; shift 2 ;;
    --reuse) reuse=1; shift ;;
    --no-build) build=0; shift ;;
    --results) results="${2:-}"; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "intake: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$only" in "" | postfix | postern) ;; *) echo "intake: --only postfix|postern" >&2; exit 2 ;; esac

sessions_list=${BENCH_SESSIONS:-"1 10 50"}
messages_spec=${BENCH_MESSAGES:-"1:2000 10:5000 50:5000"}
repeat=${BENCH_REPEAT:-3}
size=${BENCH_SIZE:-1024}
sender=bench@example.org
recipient=user@example.test

[ "$(id -u)" = 0 ] || { echo "intake: run as root (installs Postfix, starts both systems)" >&2; exit 1; }
# Every server and smtp-source are started from this shell and inherit its nice value.
nice_value=${BENCH_NICE:--10}
renice -n "$nice_value" -p $$ >/dev/null

log() { printf 'intake: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

messages_for() {
    local s=$1 item
    for item in $messages_spec; do
        [ "${item%%:*}" = "$s" ] && { echo "${item#*:}"; return; }
    done
    echo 2000
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # PORT: both systems' masters open their listeners after they have gone to the background
    local _
    for _ in $(seq 1 100); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1"
}

# Seconds since boot, to the hundredth: a clock that never steps, unlike the wall clock.
uptime_s() { cut -d' ' -f1 /proc/uptime; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Queue files in every queue that holds mail. Both systems mark a complete file with the owner-execute
# bit; a file without it after a run is a message the server acknowledged but did not finish, except
# the spare a running Postern cleanup keeps for its next message (empty, in incoming/, locked).
queue_files() { # QUEUE_DIR complete|incomplete
    local dirs=("$1/incoming" "$1/active" "$1/deferred" "$1/hold") f n=0
    if [ "$2" = complete ]; then
        find "${dirs[@]}" -type f -perm -u+x 2>/dev/null | wc -l
        return
    fi
    while IFS= read -r -d '' f; do
        live_spare "$f" || n=$((n + 1))
    done < <(find "${dirs[@]}" -type f ! -perm -u+x -print0 2>/dev/null)
    echo "$n"
}

# FILE: an empty file in incoming/ whose flock another process holds. The file is opened without
# being created (flock(1) given a name would create a vanished one).
live_spare() {
    [ -f "$1" ] && [ ! -s "$1" ] && [ "$(basename "$(dirname "$1")")" = incoming ] || return 1
    local held=0
    { flock -n 9 || held=1; } 9<"$1" 2>/dev/null || return 1
    [ "$held" = 1 ]
}

declare -A port queue label cpu

# CPU time per message: each system runs in a cpuacct cgroup of its own (cgroup v1 here; v2's
# cpu.stat where that is the hierarchy), created here and removed at exit. Without either the
# column is left out.
cg_root=""
if [ -w /sys/fs/cgroup/cpuacct/cgroup.procs ]; then
    cg_root=/sys/fs/cgroup/cpuacct
elif [ -w /sys/fs/cgroup/cgroup.procs ] && [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg_root=/sys/fs/cgroup
fi

cg_dir() { echo "$cg_root/postern-bench-$$-$1"; }

cg_enter() { # NAME: put this (sub)shell into NAME's cgroup; what it starts stays there
    [ -n "$cg_root" ] || return 0
    mkdir -p "$(cg_dir "$1")"
    echo "$BASHPID" >"$(cg_dir "$1")/cgroup.procs"
}

cg_usage_us() { # NAME: CPU microseconds used so far by everything NAME has run
    local d
    d=$(cg_dir "$1")
    if [ -f "$d/cpuacct.usage" ]; then
        echo $(($(cat "$d/cpuacct.usage") / 1000))
    elif [ -f "$d/cpu.stat" ]; then
        awk '$1 == "usage_usec" { print $2 }' "$d/cpu.stat"
    else
        echo 0
    fi
}

cg_remove() {
    local d _
    [ -n "$cg_root" ] || return 0
    for d in "$cg_root"/postern-bench-$$-*; do
        [ -d "$d" ] || continue
        for _ in $(seq 1 50); do rmdir "$d" 2>/dev/null && break; sleep 0.1; done
    done
}

# --- Postfix --------------------------------------------------------------------------------------
# Two instances of Debian's Postfix, each with its own configuration and queue directory below the
# scratch directory (`postfix -c DIR`; no change to /etc/postfix):
#   postfix         the shipped services: qmgr runs and moves every message to the deferred queue
#                   (defer_transports covers every transport), as a real Postfix does after intake;
#   postfix-intake  no qmgr, so Postfix does exactly what Postern's intake does today (smtpd and
#                   cleanup, the queue file fsynced in incoming/). in_flow_delay = 0: its flow
#                   control tokens come from qmgr, and without one smtpd would sleep 1 s per message.

ensure_postfix() {
    command -v smtp-source >/dev/null && command -v postfix >/dev/null && return
    log "installing Debian's postfix (smtp-source, and the comparison server)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
}

postfix_setup() { # NAME WITH_QMGR
    local name=$1 qmgr=$2 dir="$scratch/$1"
    port[$name]=$(free_port)
    queue[$name]="$dir/queue"
    mkdir -p "$dir/conf" "$dir/queue" "$dir/data" "$dir/log"
    chown postfix "$dir/data"
    # Only what makes it a loopback-only instance that keeps all mail; everything else is Postfix's
    # default, fsync of queue files included.
    cat >"$dir/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/log/maillog
myhostname = bench.example.org
mydomain = example.org
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
defer_transports = smtp relay local virtual error retry
EOF
    [ "$qmgr" = yes ] || echo "in_flow_delay = 0" >>"$dir/conf/main.cf"
    # master.cf: the shipped services with chroot off (Postfix's upstream default; Debian's package
    # turns it on and fills the chroot from an init script that does not run here), smtpd on the
    # benchmark's port only.
    {
        echo "127.0.0.1:${port[$name]} inet n - n - - smtpd"
        [ "$qmgr" = yes ] && echo "qmgr unix n - n 300 1 qmgr"
        cat <<EOF
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    } >"$dir/conf/master.cf"
    # `postfix check` creates the queue directories with Postfix's owners and modes.
    postfix -c "$dir/conf" check 2>/dev/null || die "$name: postfix check failed (see $dir/log/maillog)"
}

postfix_start() { # NAME
    postfix -c "$scratch/$1/conf" start >/dev/null 2>&1 || die "$1: postfix start failed"
    wait_port "${port[$1]}"
}

postfix_stop() { # NAME
    local pid _
    pid=$(tr -dc 0-9 <"${queue[$1]}/pid/master.pid" 2>/dev/null || true)
    postfix -c "$scratch/$1/conf" stop >/dev/null 2>&1 || true
    # `postfix stop` returns before the master has gone: wait for it, then make sure.
    if [ -n "$pid" ]; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            postfix -c "$scratch/$1/conf" abort >/dev/null 2>&1 || kill -9 "$pid" 2>/dev/null || true
        fi
    fi
}

# NAME: wait until qmgr has moved every message on to deferred/. The queue is counted only then: a
# count taken while qmgr renames files from one directory to the next can see a file twice.
postfix_settle() {
    local q=${queue[$1]} _
    [ -e "$q/public/qmgr" ] || return 0 # no qmgr: incoming/ keeps every message
    for _ in $(seq 1 600); do
        [ -z "$(find "$q/incoming" "$q/active" -type f -print -quit)" ] && return 0
        sleep 0.1
    done
    die "$1: qmgr has not moved the last run's mail to deferred/ within a minute"
}

postfix_clear() { # NAME
    postfix_settle "$1"
    postsuper -c "$scratch/$1/conf" -d ALL >/dev/null 2>&1 || true
}

postfix_version() { echo "Postfix $(postconf -h -d mail_version) (Debian package $(dpkg-query -W -f='${Version}' postfix))"; }

# --- Postern --------------------------------------------------------------------------------------

pn_bin=""
pn_source=""
pn_user=${BENCH_POSTERN_USER:-root}

as_postern_user() {
    if [ "$pn_user" = root ]; then "$@"; else runuser -u "$pn_user" -- "$@"; fi
}

postern_setup() { # NAME
    local name=$1 dir="$scratch/$1"
    port[$name]=$(free_port)
    queue[$name]="$dir/spool"
    if [ "$build" = 1 ]; then
        log "building Postern (release)"
        (cd "$root" && cargo build --release --workspace --bins -q) || die "cargo build failed"
    fi
    pn_bin="${CARGO_TARGET_DIR:-$root/target}/release"
    pn_source=$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)
    [ "$build" = 1 ] || pn_source="binaries of $(date -u -r "$pn_bin/smtpd" '+%Y-%m-%d %H:%M UTC'), tree now at $pn_source"
    [ -x "$pn_bin/postern" ] || die "no $pn_bin/postern (build first, or set CARGO_TARGET_DIR)"
    local d
    for d in smtpd cleanup; do
        [ -x "$pn_bin/$d" ] || die "no $pn_bin/$d: Postern's intake is not built"
    done
    mkdir -p "$dir"
    chown "$pn_user:" "$dir"
    as_postern_user "$pn_bin/postern" -c "$dir" init --port "${port[$name]}" >/dev/null
    grep -Eq '^[^#].*[[:space:]]smtpd$' "$dir/master.cf" || die "postern init enabled no smtpd"
    # Intake only, like "Postfix, no qmgr": without qmgr and the delivery agents every accepted
    # message stays in incoming/, where it is counted.
    sed -i -E 's/^(qmgr|bounce|virtual|local|smtp)([[:space:]])/#\1\2/' "$dir/master.cf"
}

postern_start() { # NAME
    as_postern_user "$pn_bin/postern" -c "$scratch/$1" start >/dev/null || die "$1: postern start failed"
    wait_port "${port[$1]}"
}

postern_stop() { # NAME
    as_postern_user "$pn_bin/postern" -c "$scratch/$1" stop >/dev/null 2>&1 || log "$1: postern stop failed"
}

postern_clear() { # NAME: complete files only; nothing writes them any more
    find "${queue[$1]}/incoming" -type f -perm -u+x -delete
}

postern_settle() { :; } # nothing moves its queue files (qmgr is left out)

postern_version() {
    local how="as root, a uid per daemon role"
    [ "$pn_user" = root ] || how="as $pn_user (dev mode: one uid, every daemon sandboxed)"
    echo "Postern $pn_source (release build, $how)"
}

# --- Load -----------------------------------------------------------------------------------------

declare -A started rate runs cpus

kind() { case $1 in postern) echo postern ;; *) echo postfix ;; esac; }

# run_load NAME SESSIONS MESSAGES: one timed smtp-source run against an empty queue; prints
# messages/second, or ends the benchmark if the queue does not then hold exactly MESSAGES complete
# files and nothing incomplete.
run_load() {
    local name=$1 s=$2 m=$3 n t0 t1 c0 c1 extra=()
    "$(kind "$name")_clear" "$name"
    n=$(queue_files "${queue[$name]}" complete)
    [ "$n" = 0 ] || die "$name: $n messages still queued before the run"
    [ "$reuse" = 1 ] && extra=(-d)
    c0=$(cg_usage_us "$name")
    t0=$(uptime_s)
    smtp-source "${extra[@]}" -s "$s" -m "$m" -l "$size" -f "$sender" -t "$recipient" \
        -M client.example.org "127.0.0.1:${port[$name]}" >"$scratch/smtp-source.$name.$s.log" 2>&1 ||
        die "$name: smtp-source failed at $s sessions: $(tail -3 "$scratch/smtp-source.$name.$s.log")"
    t1=$(uptime_s)
    c1=$(cg_usage_us "$name")
    "$(kind "$name")_settle" "$name"
    n=$(queue_files "${queue[$name]}" complete)
    [ "$n" = "$m" ] || die "$name: $m messages acknowledged, $n complete in the queue: benchmark void"
    n=$(queue_files "${queue[$name]}" incomplete)
    [ "$n" = 0 ] || die "$name: $n incomplete queue files after the run: benchmark void"
    # CPU of the timed interval only: for Postfix, qmgr's work that spills past it is not counted.
    awk -v m="$m" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" 'BEGIN { printf "%.1f %.3f\n", m / (b - a), c / 1000 / m }'
}

# --- Main -----------------------------------------------------------------------------------------

on_exit() {
    local status=$? name
    trap - EXIT INT TERM
    for name in "${!started[@]}"; do "$(kind "$name")_stop" "$name"; done
    cg_remove
    if [ -n "${scratch:-}" ] && [ "${BENCH_KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then
        rm -rf "$scratch"
    elif [ -n "${scratch:-}" ]; then
        log "scratch directory kept: $scratch"
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

ensure_postfix
if [ -n "${BENCH_DIR:-}" ]; then
    scratch=$BENCH_DIR
    mkdir -p "$scratch"
else
    scratch=$(mktemp -d /var/tmp/postern-bench.XXXXXX)
fi
# Both systems' daemons run under their own uids and must reach their directories below it.
chmod 755 "$scratch"

systems=()
[ "$only" != postern ] && systems+=(postfix postfix-intake)
[ "$only" != postfix ] && systems+=(postern)
label[postfix]="Postfix"
label[postfix-intake]="Postfix, no qmgr"
label[postern]="Postern"

for name in "${systems[@]}"; do
    case $name in
    postfix) postfix_setup postfix yes ;;
    postfix-intake) postfix_setup postfix-intake no ;;
    postern) postern_setup postern ;;
    esac
    started[$name]=1 # before the start: a half-started system is stopped at exit too
    (cg_enter "$name" && "$(kind "$name")_start" "$name") || die "$name: start failed"
    log "$name listens on 127.0.0.1:${port[$name]}"
done

# Interleaved: each round runs every system once, so a neighbour's load on this machine falls on all
# of them alike. Idle servers cost nothing while another is measured.
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
for s in $sessions_list; do
    m=$(messages_for "$s")
    for i in $(seq 1 "$repeat"); do
        for name in "${systems[@]}"; do
            read -r r c < <(run_load "$name" "$s" "$m") || die "$name: run failed"
            log "round $i, $s sessions, $m messages: $name $r msg/s, $c ms CPU per message"
            runs[$name:$s]="${runs[$name:$s]:+${runs[$name:$s]}, }$r"
            cpus[$name:$s]="${cpus[$name:$s]:+${cpus[$name:$s]} }$c"
        done
    done
    for name in "${systems[@]}"; do
        rate[$name:$s]=$(echo "${runs[$name:$s]}" | tr ',' '\n' | median)
        cpu[$name:$s]=$(echo "${cpus[$name:$s]}" | tr ' ' '\n' | median)
    done
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)
for name in "${systems[@]}"; do "$(kind "$name")_clear" "$name"; done

# --- Report ---------------------------------------------------------------------------------------

mode="one message per connection (smtp-source's default)"
[ "$reuse" = 1 ] && mode="all of a session's messages on one connection (smtp-source -d)"
fstype=$(findmnt -n -o FSTYPE -T "$scratch")
{
    echo "## Intake, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ { print $2 }') GiB memory, Linux $(uname -r), $fstype ($(findmnt -n -o OPTIONS -T "$scratch")) under $(dirname "$scratch")"
    echo "- load average before/after: $loadavg_before / $loadavg_after; servers and smtp-source at nice $nice_value"
    [ "$only" != postern ] && echo "- $(postfix_version)"
    [ "$only" != postfix ] && echo "- $(postern_version)"
    echo "- load: smtp-source -l $size, one recipient, $mode; $repeat interleaved runs per cell, median msg/s (each run in brackets)"
    echo
    printf '| sessions | messages |'
    for name in "${systems[@]}"; do printf ' %s |' "${label[$name]}"; done
    [ -z "$only" ] && printf ' Postern/Postfix | Postern/Postfix, no qmgr |'
    echo
    printf '|---:|---:|'
    for _ in "${systems[@]}"; do printf -- '---:|'; done
    [ -z "$only" ] && printf -- '---:|---:|'
    echo
    for s in $sessions_list; do
        printf '| %s | %s |' "$s" "$(messages_for "$s")"
        for name in "${systems[@]}"; do printf ' %s (%s) |' "${rate[$name:$s]}" "${runs[$name:$s]}"; done
        if [ -z "$only" ]; then
            awk -v a="${rate[postern:$s]}" -v b="${rate[postfix:$s]}" -v c="${rate[postfix-intake:$s]}" \
                'BEGIN { printf " %.2f× | %.2f× |", a / b, a / c }'
        fi
        echo
    done
    echo
    if [ -n "$cg_root" ]; then
        echo "CPU time per message (ms, median; all of each system's processes, client excluded):"
        echo
        printf '| sessions |'
        for name in "${systems[@]}"; do printf ' %s |' "${label[$name]}"; done
        echo
        printf '|---:|'
        for _ in "${systems[@]}"; do printf -- '---:|'; done
        echo
        for s in $sessions_list; do
            printf '| %s |' "$s"
            for name in "${systems[@]}"; do printf ' %s |' "${cpu[$name:$s]}"; done
            echo
        done
        echo
    fi
} >"$scratch/table.md"
cat "$scratch/table.md"
if [ -n "$results" ]; then
    cat "$scratch/table.md" >>"$results"
    log "table appended to $results"
fi
