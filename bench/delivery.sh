#!/usr/bin/env bash
# Delivery benchmark: Postfix's smtp-source against Postern and against Debian's Postfix, both
# delivering every message into a Maildir, in the same run, on the same file system. Timed from the
# start of smtp-source until the last message is in new/. See bench/README.md.
#
# Usage: bench/delivery.sh [--only postfix|postern] [--postern-bin [LABEL=]DIR]... [--reuse]
#                          [--no-build] [--results FILE]
#   --only S          measure one system (the table then has no ratio)
#   --postern-bin D   measure the Postern binaries in D (postern, postern-master and the daemons);
#                     LABEL=D names the column. Repeat it to measure several builds interleaved in
#                     one run. Without it: this tree's release build (built first unless --no-build)
#   --reuse           smtp-source -d: several messages per connection (default: one per connection)
#   --no-build        use the Postern binaries already in $CARGO_TARGET_DIR/release (or target/release)
#   --results F       append the table to F (default bench/RESULTS.md; "" appends nowhere)
#
# Environment:
#   BENCH_MODES      what to deliver to                      (default "virtual local")
#                    virtual: user@example.test, a virtual Maildir under virtual_mailbox_base
#                    local:   a local user (made with useradd, removed at exit), home_mailbox = Maildir/
#   BENCH_SESSIONS   parallel smtp-source sessions           (default 10)
#   BENCH_MESSAGES   messages per run                        (default 2000)
#   BENCH_REPEAT     runs per system and mode                (default 3; the median is reported)
#   BENCH_SIZE       payload bytes per message               (default 1024)
#   BENCH_TIMEOUT    seconds without a new delivery before a run is void (default 60)
#   BENCH_DIR        scratch directory (default: a new one under /var/tmp, removed at exit)
#   BENCH_KEEP=1     keep the scratch directory (logs, configuration, queues, mailboxes)
#   BENCH_NICE       nice value for the servers and the load generator (default -10; 0: off)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
only=""
reuse=0
build=1
results="$root/bench/RESULTS.md"
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
    --only) only="${2:-}"; shift 2 ;;
    --postern-bin) bins+=("${2:?--postern-bin needs a directory}"); shift 2 ;;
    --reuse) reuse=1; shift ;;
    --no-build) build=0; shift ;;
    --results) results="${2:-}"; shift 2 ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "delivery: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$only" in "" | postfix | postern) ;; *) echo "delivery: --only postfix|postern" >&2; exit 2 ;; esac

modes=${BENCH_MODES:-"virtual local"}
sessions=${BENCH_SESSIONS:-10}
messages=${BENCH_MESSAGES:-2000}
repeat=${BENCH_REPEAT:-3}
size=${BENCH_SIZE:-1024}
timeout=${BENCH_TIMEOUT:-60}
sender=bench@example.org
vdomain=example.test
# Postern's `postern init` instance calls itself localhost.localdomain (in its mydestination);
# the Postfix instance has the same name in mydestination.
ldomain=localhost.localdomain
for mode in $modes; do
    case $mode in virtual | local) ;; *) echo "delivery: BENCH_MODES: virtual, local" >&2; exit 2 ;; esac
done

[ "$(id -u)" = 0 ] || { echo "delivery: run as root (installs Postfix, adds a user, starts both systems)" >&2; exit 1; }
nice_value=${BENCH_NICE:--10}
renice -n "$nice_value" -p $$ >/dev/null

log() { printf 'delivery: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # PORT
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

files_in() { # DIR...: regular files directly in each DIR (missing ones count 0)
    find "$@" -maxdepth 1 -type f 2>/dev/null | wc -l
}

declare -A port queue label maildir kind_of pn_bin_of pn_source_of started

# --- CPU accounting (as bench/intake.sh) ----------------------------------------------------------

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

# --- The local recipient --------------------------------------------------------------------------
# A real user, so that both systems find it in /etc/passwd: its home lies below $scratch/home
# (Postern's local_home_base), removed with the user at exit.

bench_user=""
bench_home=""

user_setup() {
    bench_user="pbench$$"
    bench_user=${bench_user:0:31}
    bench_home="$scratch/home/$bench_user"
    mkdir -p "$scratch/home"
    chmod 755 "$scratch/home"
    useradd --no-create-home --home-dir "$bench_home" --shell /usr/sbin/nologin --user-group "$bench_user" ||
        die "useradd $bench_user failed"
    user_added=1
    mkdir -p "$bench_home"
    chown "$bench_user:$bench_user" "$bench_home"
    chmod 700 "$bench_home"
}

user_remove() {
    [ "${user_added:-0}" = 1 ] || return 0
    userdel "$bench_user" >/dev/null 2>&1 || log "userdel $bench_user failed"
}

# --- Postfix --------------------------------------------------------------------------------------

ensure_postfix() {
    command -v smtp-source >/dev/null && command -v postfix >/dev/null && return
    log "installing Debian's postfix (smtp-source, and the comparison server)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
}

postfix_setup() { # NAME
    local name=$1 dir="$scratch/$1" uid gid
    kind_of[$name]=postfix
    label[$name]="Postfix"
    port[$name]=$(free_port)
    queue[$name]="$dir/queue"
    maildir[$name:virtual]="$dir/vmail/$vdomain/user"
    maildir[$name:local]="$bench_home/Maildir"
    mkdir -p "$dir/conf" "$dir/queue" "$dir/data" "$dir/log" "$dir/vmail"
    chown postfix "$dir/data"
    # The virtual mailboxes belong to one uid, as Postern's vmail_user: the bench user's.
    uid=$(id -u "$bench_user")
    gid=$(id -g "$bench_user")
    chown "$uid:$gid" "$dir/vmail"
    echo "user@$vdomain  $vdomain/user/" >"$dir/conf/vmailbox"
    # A loopback-only instance that delivers what it accepts: everything else is Postfix's
    # default (fsync of queue files and of each Maildir file, qmgr's concurrency limits).
    cat >"$dir/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/log/maillog
myhostname = bench.example.org
mydomain = example.org
mydestination = $ldomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
home_mailbox = Maildir/
virtual_mailbox_domains = $vdomain
virtual_mailbox_base = $dir/vmail
virtual_mailbox_maps = texthash:$dir/conf/vmailbox
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
EOF
    # master.cf: the shipped services, chroot off (upstream's default), smtpd on the port only.
    {
        echo "127.0.0.1:${port[$name]} inet n - n - - smtpd"
        cat <<EOF
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
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
    if [ -n "$pid" ]; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            postfix -c "$scratch/$1/conf" abort >/dev/null 2>&1 || kill -9 "$pid" 2>/dev/null || true
        fi
    fi
}

postfix_queued() { # NAME: queue files left (after a run: none); deferred/ is hashed
    local q=${queue[$1]}
    find "$q/maildrop" "$q/incoming" "$q/active" "$q/deferred" "$q/hold" "$q/corrupt" -type f 2>/dev/null | wc -l
}

postfix_version() { echo "Postfix $(postconf -h -d mail_version) (Debian package $(dpkg-query -W -f='${Version}' postfix))"; }

# --- Postern --------------------------------------------------------------------------------------

postern_setup() { # NAME BIN_DIR LABEL
    local name=$1 bin=$2 dir="$scratch/$1" d
    kind_of[$name]=postern
    label[$name]=$3
    pn_bin_of[$name]=$bin
    port[$name]=$(free_port)
    queue[$name]="$dir/spool"
    maildir[$name:virtual]="$dir/mail/$vdomain/user"
    maildir[$name:local]="$bench_home/Maildir"
    [ -x "$bin/postern" ] || die "no $bin/postern"
    for d in postern-master smtpd cleanup qmgr virtual local; do
        [ -x "$bin/$d" ] || die "no $bin/$d: not a Postern build with delivery"
    done
    pn_source_of[$name]="binaries of $(date -u -r "$bin/postern" '+%Y-%m-%d %H:%M UTC') in $bin"
    [ -n "${4:-}" ] && pn_source_of[$name]=$4
    mkdir -p "$dir"
    "$bin/postern" -c "$dir" init --port "${port[$name]}" >/dev/null
    # The instance `postern init` writes delivers user@example.test to a Maildir already
    # (mail/example.test/user/). Added: the local recipient's home_mailbox, and where homes lie.
    cat >>"$dir/main.cf" <<EOF

# Added by bench/delivery.sh: local delivery to the bench user's ~/Maildir/.
home_mailbox = Maildir/
local_home_base = $scratch/home
EOF
    # Only the services the benchmark uses: there is no smtp client or pickup to start.
    sed -i -E 's/^(pickup|smtp)([[:space:]])/#\1\2/' "$dir/master.cf"
}

postern_start() { # NAME
    "${pn_bin_of[$1]}/postern" -c "$scratch/$1" start >/dev/null 2>&1 || die "$1: postern start failed"
    wait_port "${port[$1]}"
}

postern_stop() { # NAME
    "${pn_bin_of[$1]}/postern" -c "$scratch/$1" stop >/dev/null 2>&1 || log "$1: postern stop failed"
}

postern_queued() { # NAME: queue files left, but the spare each running cleanup keeps for its next
    # message (empty, in incoming/, locked)
    local q=${queue[$1]} f n=0
    while IFS= read -r -d '' f; do
        live_spare "$f" || n=$((n + 1))
    done < <(find "$q/maildrop" "$q/incoming" "$q/active" "$q/deferred" "$q/hold" "$q/corrupt" -type f -print0 2>/dev/null)
    echo "$n"
}

# FILE: an empty file in incoming/ whose flock another process holds (as in bench/intake.sh). The
# file is opened without being created.
live_spare() {
    [ -f "$1" ] && [ ! -s "$1" ] && [ "$(basename "$(dirname "$1")")" = incoming ] || return 1
    local held=0
    { flock -n 9 || held=1; } 9<"$1" 2>/dev/null || return 1
    [ "$held" = 1 ]
}

# --- Load -----------------------------------------------------------------------------------------

recipient_for() { # MODE
    case $1 in virtual) echo "user@$vdomain" ;; local) echo "$bench_user@$ldomain" ;; esac
}

clear_maildir() { # DIR
    local sub
    for sub in new cur tmp; do
        [ -d "$1/$sub" ] && find "$1/$sub" -maxdepth 1 -type f -delete
    done
    return 0
}

# run_load NAME MODE: one timed run; prints messages/second and CPU ms per message, or ends the
# benchmark if the Maildir does not then hold exactly $messages new messages with an empty queue.
run_load() {
    local name=$1 mode=$2 md n last progress t0 t1 c0 c1 extra=() k
    k=${kind_of[$name]}
    md=${maildir[$name:$mode]}
    clear_maildir "$md"
    n=$("${k}_queued" "$name")
    [ "$n" = 0 ] || die "$name: $n queue files before the run"
    [ "$reuse" = 1 ] && extra=(-d)
    c0=$(cg_usage_us "$name")
    t0=$(uptime_s)
    smtp-source "${extra[@]}" -s "$sessions" -m "$messages" -l "$size" -f "$sender" -t "$(recipient_for "$mode")" \
        -M client.example.org "127.0.0.1:${port[$name]}" >"$scratch/smtp-source.$name.$mode.log" 2>&1 ||
        die "$name: smtp-source failed: $(tail -3 "$scratch/smtp-source.$name.$mode.log")"
    # Every message in new/: poll, and give up once nothing new has arrived for $timeout seconds.
    last=-1
    progress=$(uptime_s)
    while :; do
        n=$(files_in "$md/new")
        [ "$n" -ge "$messages" ] && break
        if [ "$n" != "$last" ]; then
            last=$n
            progress=$(uptime_s)
        elif awk -v a="$progress" -v b="$(uptime_s)" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
            die "$name ($mode): $n of $messages messages in $md/new after ${timeout}s without progress: benchmark void"
        fi
        sleep 0.05
    done
    t1=$(uptime_s)
    c1=$(cg_usage_us "$name")
    # Nothing more may arrive and nothing may stay queued: exactly one delivery per message.
    for _ in $(seq 1 100); do
        [ "$("${k}_queued" "$name")" = 0 ] && break
        sleep 0.1
    done
    sleep 0.5
    n=$(files_in "$md/new")
    [ "$n" = "$messages" ] || die "$name ($mode): $messages messages sent, $n in $md/new: benchmark void"
    n=$(files_in "$md/tmp")
    [ "$n" = 0 ] || die "$name ($mode): $n files left in $md/tmp: benchmark void"
    n=$("${k}_queued" "$name")
    [ "$n" = 0 ] || die "$name ($mode): $n queue files left after every message was delivered: benchmark void"
    awk -v m="$messages" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" 'BEGIN { printf "%.1f %.3f\n", m / (b - a), c / 1000 / m }'
}

# --- Main -----------------------------------------------------------------------------------------

on_exit() {
    local status=$? name
    trap - EXIT INT TERM
    for name in "${!started[@]}"; do "${kind_of[$name]}_stop" "$name"; done
    cg_remove
    user_remove
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
chmod 755 "$scratch"
case "$scratch" in *[[:space:],\$]*) die "$scratch: not usable in main.cf" ;; esac
user_setup

systems=()
[ "$only" != postern ] && systems+=(postfix) && postfix_setup postfix
if [ "$only" != postfix ]; then
    if [ "${#bins[@]}" = 0 ]; then
        if [ "$build" = 1 ]; then
            log "building Postern (release)"
            (cd "$root" && cargo build --release --workspace --bins -q) || die "cargo build failed"
        fi
        src=$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)
        [ "$build" = 1 ] || src="binaries of $(date -u -r "${CARGO_TARGET_DIR:-$root/target}/release/postern" '+%Y-%m-%d %H:%M UTC'), tree now at $src"
        systems+=(postern)
        postern_setup postern "${CARGO_TARGET_DIR:-$root/target}/release" "Postern" "$src (release build)"
    else
        i=0
        for spec in "${bins[@]}"; do
            i=$((i + 1))
            lab="Postern $i"
            dir=$spec
            case $spec in *=*) lab="Postern ${spec%%=*}"; dir=${spec#*=} ;; esac
            dir=$(cd "$dir" && pwd) || die "$dir: no such directory"
            systems+=("postern$i")
            postern_setup "postern$i" "$dir" "$lab"
        done
    fi
fi
[ "${#systems[@]}" -gt 0 ] || die "nothing to measure"

for name in "${systems[@]}"; do
    started[$name]=1
    (cg_enter "$name" && "${kind_of[$name]}_start" "$name") || die "$name: start failed"
    log "$name (${label[$name]}) listens on 127.0.0.1:${port[$name]}"
done

declare -A rate runs cpus cpu
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
for mode in $modes; do
    for i in $(seq 1 "$repeat"); do
        for name in "${systems[@]}"; do
            read -r r c < <(run_load "$name" "$mode") || die "$name: run failed"
            log "round $i, $mode, $sessions sessions, $messages messages: $name $r msg/s, $c ms CPU per message (load $(cut -d' ' -f1 /proc/loadavg))"
            runs[$name:$mode]="${runs[$name:$mode]:+${runs[$name:$mode]}, }$r"
            cpus[$name:$mode]="${cpus[$name:$mode]:+${cpus[$name:$mode]} }$c"
        done
    done
    for name in "${systems[@]}"; do
        rate[$name:$mode]=$(echo "${runs[$name:$mode]}" | tr ',' '\n' | median)
        cpu[$name:$mode]=$(echo "${cpus[$name:$mode]}" | tr ' ' '\n' | median)
    done
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- Report ---------------------------------------------------------------------------------------

conn="one message per connection (smtp-source's default)"
[ "$reuse" = 1 ] && conn="all of a session's messages on one connection (smtp-source -d)"
fstype=$(findmnt -n -o FSTYPE -T "$scratch")
pns=()
for name in "${systems[@]}"; do [ "${kind_of[$name]}" = postern ] && pns+=("$name"); done
{
    echo "## Delivery, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ { print $2 }') GiB memory, Linux $(uname -r), $fstype ($(findmnt -n -o OPTIONS -T "$scratch")) under $(dirname "$scratch")"
    echo "- load average before/after: $loadavg_before / $loadavg_after; servers and smtp-source at nice $nice_value"
    [ "$only" != postern ] && echo "- $(postfix_version)"
    for name in "${pns[@]}"; do echo "- ${label[$name]}: ${pn_source_of[$name]}, as root (a uid per daemon role)"; done
    echo "- load: smtp-source -s $sessions -m $messages -l $size, one recipient, $conn; timed from its start until the last message is in the Maildir's new/; $repeat interleaved runs per cell, median msg/s (each run in brackets)"
    echo
    printf '| delivery |'
    for name in "${systems[@]}"; do printf ' %s |' "${label[$name]}"; done
    if [ "$only" = "" ]; then for name in "${pns[@]}"; do printf ' %s/Postfix |' "${label[$name]}"; done; fi
    [ "${#pns[@]}" -gt 1 ] && printf ' %s/%s |' "${label[${pns[-1]}]}" "${label[${pns[0]}]}"
    echo
    printf '|---|'
    for _ in "${systems[@]}"; do printf -- '---:|'; done
    if [ "$only" = "" ]; then for _ in "${pns[@]}"; do printf -- '---:|'; done; fi
    [ "${#pns[@]}" -gt 1 ] && printf -- '---:|'
    echo
    for mode in $modes; do
        case $mode in
        virtual) printf '| virtual (user@%s → Maildir) |' "$vdomain" ;;
        local) printf '| local (user in mydestination → ~/Maildir/) |' ;;
        esac
        for name in "${systems[@]}"; do printf ' %s (%s) |' "${rate[$name:$mode]}" "${runs[$name:$mode]}"; done
        if [ "$only" = "" ]; then
            for name in "${pns[@]}"; do
                awk -v a="${rate[$name:$mode]}" -v b="${rate[postfix:$mode]}" 'BEGIN { printf " %.2f× |", a / b }'
            done
        fi
        if [ "${#pns[@]}" -gt 1 ]; then
            awk -v a="${rate[${pns[-1]}:$mode]}" -v b="${rate[${pns[0]}:$mode]}" 'BEGIN { printf " %.2f× |", a / b }'
        fi
        echo
    done
    echo
    if [ -n "$cg_root" ]; then
        echo "CPU time per message (ms, median; all of each system's processes from the first connection to the last delivery, client excluded):"
        echo
        printf '| delivery |'
        for name in "${systems[@]}"; do printf ' %s |' "${label[$name]}"; done
        echo
        printf '|---|'
        for _ in "${systems[@]}"; do printf -- '---:|'; done
        echo
        for mode in $modes; do
            printf '| %s |' "$mode"
            for name in "${systems[@]}"; do printf ' %s |' "${cpu[$name:$mode]}"; done
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
