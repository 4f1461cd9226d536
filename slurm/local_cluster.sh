#!/usr/bin/env bash
# A single-node SLURM cluster on 127.0.0.1 for tests and CI, run as root without systemd or
# cgroups, with accounting (submitit reads job states with `sacct`).
#
#   slurm/local_cluster.sh up       install Debian's SLURM if missing, start, wait until usable
#   slurm/local_cluster.sh down     stop every daemon by its pid file
#   slurm/local_cluster.sh status   what runs, and the queue
#
# State (config, logs, pid files, spool, the accounting database) lives in $STN_SLURM_DIR,
# default /var/tmp/stn-slurm. Client commands read $STN_SLURM_DIR/etc/slurm.conf: `up` links
# /etc/slurm/slurm.conf to it when that path is free; otherwise export the SLURM_CONF it prints.
set -euo pipefail

STATE=${STN_SLURM_DIR:-/var/tmp/stn-slurm}
CLUSTER=stn
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd) # start order; stopped in reverse

ETC=$STATE/etc RUN=$STATE/run LOG=$STATE/log DB=$STATE/mysql MUNGE=$STATE/munge
export SLURM_CONF=$ETC/slurm.conf

say() { printf '[local_cluster] %s\n' "$*"; }
die() {
    printf '[local_cluster] error: %s\n' "$*" >&2
    exit 1
}

pidfile() {
    case $1 in
    munged) echo "$MUNGE/munged.pid" ;;
    mariadbd) echo "$DB/mariadbd.pid" ;;
    *) echo "$RUN/$1.pid" ;;
    esac
}

alive() { # alive DAEMON: its pid file names a running process
    local f
    f=$(pidfile "$1")
    [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
    say "$what ready ($((SECONDS - T0)) s)"
}

fail_with_log() { # fail_with_log MESSAGE LOGFILE
    [[ -f $2 ]] && tail -n 20 "$2" >&2
    die "$1 (log: $2)"
}

check_state_dir() {
    [[ $STATE == /* ]] || die "STN_SLURM_DIR must be an absolute path, got '$STATE'"
    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
    mkdir -p "$STATE"
    case "$(cd "$STATE" && pwd -P)/" in
    "$repo"/*) die "STN_SLURM_DIR=$STATE is inside the repository; valid: a folder outside it" ;;
    esac
}

install_packages() {
    local cmd missing=0
    for cmd in slurmctld slurmd slurmdbd sinfo sacct munged mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
    say "installing ${PACKAGES[*]} from Debian's packages"
    # Package scripts must not start the daemons: without systemd they would fail or collide.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Once: skip it when the package lists were refreshed in the last half hour (e.g. by CI).
    if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -30 2>/dev/null) ]]; then
        apt-get update -qq
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$STATE/apt.log" 2>&1 || rc=$?
    if ((made_policy)); then rm -f "$policy"; fi
    ((rc == 0)) || fail_with_log "apt-get install failed" "$STATE/apt.log"
    say "installed ($((SECONDS - T0)) s)"
}

write_config() {
    local host cpus mem_mb first_id=${1:-1}
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/spool"
    cat >"$ETC/slurm.conf" <<EOF
# Written by slurm/local_cluster.sh: a single node on 127.0.0.1 without systemd or cgroups.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start again after 10 s instead of the default 120 s.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# The main scheduler only, every 2 s: a requeued job restarts as soon as its credential expired
# (backfill, every 30 s, restarted such jobs late, and SLURM then sent them USR2 at once).
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
JobRequeue=1
MailProg=/bin/true
# Job ids stay unique across restarts (slurmctld -c forgets the last id; sacct remembers).
FirstJobId=$first_id
# Finished jobs leave squeue quickly; a killed job gets 5 s between SIGTERM and SIGKILL.
MinJobAge=5
KillWait=5
ReturnToService=2
PropagateResourceLimits=NONE
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd refuses a config that others can read: it holds the database credentials.
    (
        umask 077
        cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$host
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    )
    chown root:root "$ETC/slurmdbd.conf" && chmod 600 "$ETC/slurmdbd.conf"
    # The client (mariadb) library reads the socket path from here: see start_slurmdbd.
    printf '[client]\nsocket=%s\n' "$DB/mysqld.sock" >"$ETC/my.cnf"
}

start_munged() {
    mkdir -p "$MUNGE"
    [[ -s $MUNGE/munge.key ]] || dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
    chown -R munge:munge "$MUNGE" && chmod 700 "$MUNGE" && chmod 400 "$MUNGE/munge.key"
    # The socket stays at munge's default path, where every SLURM command looks for it.
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    runuser -u munge -- munged --force --key-file="$MUNGE/munge.key" --pid-file="$MUNGE/munged.pid" \
        --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" ||
        fail_with_log "munged did not start" "$MUNGE/munged.log"
    wait_for 10 munged munge --string=ping ||
        fail_with_log "munged does not answer" "$MUNGE/munged.log"
}

start_mariadbd() {
    if [[ ! -d $DB/mysql ]]; then
        mkdir -p "$DB" && chown mysql:mysql "$DB"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
            fail_with_log "mariadb-install-db failed" "$LOG/mariadb-install.log"
    fi
    # Private: no TCP at all, socket, pid and log inside the data folder.
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB" --socket="$DB/mysqld.sock" \
        --pid-file="$DB/mariadbd.pid" --log-error="$DB/mariadbd.err" --skip-networking \
        --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadbd mariadb --no-defaults --socket="$DB/mysqld.sock" -e 'select 1' ||
        fail_with_log "mariadbd does not answer" "$DB/mariadbd.err"
}

start_slurmdbd() {
    # slurmdbd's mysql plugin passes no socket, so the client library takes it from my.cnf in
    # $MYSQL_HOME (or $MYSQL_UNIX_PORT); slurmdbd.conf is found next to $SLURM_CONF.
    MYSQL_HOME=$ETC MYSQL_UNIX_PORT=$DB/mysqld.sock slurmdbd ||
        fail_with_log "slurmdbd did not start" "$LOG/slurmdbd.log"
    wait_for 60 slurmdbd sacctmgr -n -P list cluster ||
        fail_with_log "slurmdbd does not answer" "$LOG/slurmdbd.log"
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null
    fi
}

next_job_id() { # one more than the largest job id accounting has seen
    sacct -a -X -n -P -o JobIDRaw -S 2000-01-01 -E now 2>/dev/null |
        awk -F_ '$1 + 0 > max {max = $1 + 0} END {print max + 1}'
}

node_idle() { [[ $(sinfo -h -o %T 2>/dev/null) == idle ]]; }
node_up() { [[ $(sinfo -h -o %T 2>/dev/null) =~ ^(idle|mixed|allocated|completing)$ ]]; }

start_slurm() {
    write_config "$(next_job_id)"
    slurmctld -c || fail_with_log "slurmctld did not start" "$LOG/slurmctld.log"
    slurmd || fail_with_log "slurmd did not start" "$LOG/slurmd.log"
    wait_for 60 "node idle" node_idle || fail_with_log "the node is not idle" "$LOG/slurmctld.log"
    wait_for 30 sacct sacct -n -X -j 1 || fail_with_log "sacct does not answer" "$LOG/slurmdbd.log"
}

link_conf() {
    local etc_conf=/etc/slurm/slurm.conf
    if [[ -L $etc_conf || ! -e $etc_conf ]]; then
        mkdir -p /etc/slurm && ln -sfn "$ETC/slurm.conf" "$etc_conf"
    else
        say "$etc_conf exists: run  export SLURM_CONF=$ETC/slurm.conf"
    fi
}

all_alive() {
    local d
    for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
}

up() {
    T0=$SECONDS
    ((EUID == 0)) || die "run as root (it starts daemons and may apt-get install)"
    check_state_dir
    install_packages
    if all_alive && node_up; then
        say "already up ($STATE)"
        return 0
    fi
    down quiet
    write_config # slurmdbd and the clients need a config before slurmctld starts
    start_munged
    start_mariadbd
    start_slurmdbd
    start_slurm
    link_conf
    say "up in $((SECONDS - T0)) s: node $(hostname -s), $(nproc) CPUs, state in $STATE"
}

stop_pid() { # stop_pid PID: SIGTERM, then SIGKILL after 15 s
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    local i d f pid
    ((EUID == 0)) || die "run as root (the daemons run as root or munge)"
    if alive slurmctld; then # jobs would outlive slurmd under proctrack/linuxproc
        squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        d=${DAEMONS[i]}
        f=$(pidfile "$d")
        alive "$d" || continue
        pid=$(cat "$f")
        stop_pid "$pid"
        rm -f "$f"
        [[ ${1:-} == quiet ]] || say "stopped $d ($pid)"
    done
}

status() {
    local d
    for d in "${DAEMONS[@]}"; do
        if alive "$d"; then say "$d running ($(cat "$(pidfile "$d")"))"; else say "$d stopped"; fi
    done
    if alive slurmctld; then
        sinfo
        squeue
    fi
    say "export SLURM_CONF=$ETC/slurm.conf"
}

case ${1:-} in
up | down | status) "$1" ;;
*) die "usage: $0 up|down|status (got '${1:-}')" ;;
esac
