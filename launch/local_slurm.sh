#!/usr/bin/env bash
# local_slurm.sh — a real, self-contained SLURM cluster on this one machine, for tests, CI and demos.
#
# Usage (as root, Debian bookworm / slurm-wlm 22.05, no systemd needed):
#   bash launch/local_slurm.sh start     # install what is missing, write config, start everything, wait for idle nodes
#   bash launch/local_slurm.sh status    # daemons started by this script + sinfo
#   bash launch/local_slurm.sh stop      # stop exactly the daemons this script started (by their pid files)
#   bash launch/local_slurm.sh restart   # stop + start (fresh state)
#   bash launch/local_slurm.sh install   # only apt-get the packages
#   eval "$(bash launch/local_slurm.sh env)"   # export SLURM_CONF (only needed if /etc/slurm/slurm.conf is not ours)
#
# What `start` brings up (all config, state, logs and pid files under $RESEARCH_OPTIM_SLURM_DIR,
# default /var/tmp/research_optim_slurm):
#   munged (as user munge, private key + socket)  ->  MariaDB (private datadir, 127.0.0.1:$DB_PORT)
#   -> slurmdbd (so `sacct` works: submitit reads job states from it) -> cluster registered with sacctmgr
#   -> slurmctld -> slurmd for the real host (partition `debug`, default, all CPUs of the machine)
#   -> two simulated nodes n1, n2 (`slurmd -N n1/n2`, partition `multi`, CPUs=2 each) for multi-node jobs.
#
# Client configuration: the script makes /etc/slurm/slurm.conf a symlink to its own slurm.conf, so plain
# `sbatch`, `srun`, `sacct`, `sinfo` and submitit just work. If /etc/slurm/slurm.conf already exists and is
# not ours, it is left alone and clients need `export SLURM_CONF=$RESEARCH_OPTIM_SLURM_DIR/etc/slurm.conf`
# (printed by `start` and by `env`).
#
# Every `start` begins from a fresh state (empty controller state and accounting DB). Job ids therefore do
# not continue from the previous cluster; the first job id is derived from the clock so that ids from one
# start to the next do not collide, but still use a fresh submitit folder per cluster start.
#
# Environment overrides:
#   RESEARCH_OPTIM_SLURM_DIR      base directory (default /var/tmp/research_optim_slurm); wiped on every start
#   RESEARCH_OPTIM_SLURM_CLUSTER  ClusterName (default research_optim)
#   RESEARCH_OPTIM_SLURM_PORTS    first of 4 consecutive ports: slurmctld, slurmd, slurmdbd, MariaDB (default
#                                 16817-16820, away from a system SLURM's 6817-6819); n1, n2 use 17001-17002
#
# Known harmless log noise: pmix plugin, hwloc, InnoDB buffer-size recommendations from slurmdbd.
set -euo pipefail

ROOT="${RESEARCH_OPTIM_SLURM_DIR:-/var/tmp/research_optim_slurm}"
CLUSTER="${RESEARCH_OPTIM_SLURM_CLUSTER:-research_optim}"
PORT_BASE="${RESEARCH_OPTIM_SLURM_PORTS:-16817}"
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
FAKE_NODES=(n1 n2)
FAKE_PORTS="17001-17002"
FAKE_CPUS=2
MARKER="$ROOT/.research_optim_slurm"   # proves that $ROOT is ours before we wipe it
CONF="$ROOT/etc/slurm.conf"
SYSTEM_CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client)

log() { printf '[local_slurm] %s\n' "$*"; }
die() { printf '[local_slurm] ERROR: %s\n' "$*" >&2; exit 1; }

# ----------------------------------------------------------------------------------------------- install
cmd_install() {
    local missing=()
    local bin
    for bin in slurmctld slurmd slurmdbd sbatch sacctmgr munged mungekey mariadbd mariadb-install-db mariadb; do
        command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages already installed"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "installing needs root (missing: ${missing[*]})"
    log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

# ----------------------------------------------------------------------------------------------- daemons
# name:pidfile pairs, in start order; stop walks them backwards.
daemon_pidfiles() {
    echo "munged:$ROOT/munge/run/munged.pid"
    echo "mariadbd:$ROOT/mysql/mariadbd.pid"
    echo "slurmdbd:$ROOT/run/slurmdbd.pid"
    echo "slurmctld:$ROOT/run/slurmctld.pid"
    echo "slurmd($HOST):$ROOT/run/slurmd-$HOST.pid"
    local n
    for n in "${FAKE_NODES[@]}"; do echo "slurmd($n):$ROOT/run/slurmd-$n.pid"; done
}

pid_alive() {  # pid_alive PIDFILE -> prints pid and succeeds if that process runs
    local pid
    [ -s "$1" ] || return 1
    pid="$(tr -dc 0-9 < "$1")"
    # a zombie (killed, not yet reaped) answers kill -0 but is not running
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] \
        && echo "$pid"
}

count_running() {
    local entry running=0
    while IFS= read -r entry; do
        pid_alive "${entry#*:}" >/dev/null && running=$((running + 1))
    done < <(daemon_pidfiles)
    echo "$running"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND... : poll every 0.2 s
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out after ${seconds}s waiting for $what (logs: $ROOT/log)"
        sleep 0.2
    done
}

# ----------------------------------------------------------------------------------------------- config
write_config() {
    local node_line cpus mem node_mem fake_mem
    # Real node: the topology slurmd detects (CPUs, sockets, cores, threads) ...
    node_line="$(slurmd -C | head -n1)"
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")"
    [ -n "$cpus" ] && [ -n "$mem" ] || die "could not parse 'slurmd -C': $node_line"
    # ... but 95 % of its memory: a node whose detected memory ever dips below RealMemory gets drained.
    node_mem=$((mem * 95 / 100))
    node_line="$(sed -e "s/RealMemory=[0-9]*/RealMemory=$node_mem/" -e "s/^NodeName=[^ ]*/NodeName=$HOST/" <<<"$node_line")"
    # The simulated nodes share this machine's memory; declare a quarter each so --mem requests are honoured
    # without promising (much) more than exists.
    fake_mem=$((mem / 4))

    cat > "$CONF" <<EOF
# Generated by launch/local_slurm.sh — a single-machine test cluster. Regenerated on every start.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime + eager scheduler: a requeued job restarts in ~11 s, a trivial job ends in ~1 s.
AuthInfo=cred_expire=10,socket=$ROOT/munge/run/munge.socket
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
# No systemd/cgroups in containers: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Trust the node lines below over what each slurmd detects: n1/n2 claim CPUs=2 even on a 1-core runner.
SlurmdParameters=config_overrides
FirstJobId=$(( $(date +%s) % 60000000 + 1 ))
StateSaveLocation=$ROOT/state/slurmctld
SlurmdSpoolDir=$ROOT/state/slurmd-%n
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd-%n.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# For accounting_storage/slurmdbd this names the munge socket to use (ours is private, not /run/munge).
AccountingStoragePass=$ROOT/munge/run/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none

$node_line NodeAddr=127.0.0.1 State=UNKNOWN
# Simulated nodes: extra slurmd processes on this host (slurmd -N n1 ...), each with its own port.
NodeName=n[1-2] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$FAKE_PORTS] CPUs=$FAKE_CPUS RealMemory=$fake_mem State=UNKNOWN

PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=multi Nodes=n[1-2] Default=NO MaxTime=INFINITE State=UP
EOF

    # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF; it holds a password, so 0600.
    local db_pass
    db_pass="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "$db_pass" > "$ROOT/etc/db_password"
    chmod 600 "$ROOT/etc/db_password"
    (umask 077 && cat > "$ROOT/etc/slurmdbd.conf" <<EOF
# Generated by launch/local_slurm.sh
AuthType=auth/munge
AuthInfo=socket=$ROOT/munge/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$ROOT/log/slurmdbd.log
PidFile=$ROOT/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
    )
}

ensure_hosts() {
    # The simulated node names must resolve, else srun's rendezvous between n1 and n2 hangs.
    local n missing=()
    for n in "${FAKE_NODES[@]}"; do
        getent hosts "$n" >/dev/null || missing+=("$n")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "127.0.0.1 ${missing[*]}  # research_optim local SLURM (launch/local_slurm.sh)" >> /etc/hosts
        log "added '127.0.0.1 ${missing[*]}' to /etc/hosts"
    fi
}

link_system_conf() {
    mkdir -p /etc/slurm
    if [ -L "$SYSTEM_CONF" ] || [ ! -e "$SYSTEM_CONF" ]; then
        ln -sfn "$CONF" "$SYSTEM_CONF"
        return 0
    fi
    log "NOTE: $SYSTEM_CONF exists and is not a symlink; left alone. Clients need: export SLURM_CONF=$CONF"
    return 1
}

# ----------------------------------------------------------------------------------------------- start
start_munge() {
    mkdir -p "$ROOT/munge/etc" "$ROOT/munge/run" "$ROOT/munge/lib" "$ROOT/munge/log"
    mungekey --create --keyfile="$ROOT/munge/etc/munge.key" --force
    chown -R munge:munge "$ROOT/munge"
    chmod 700 "$ROOT/munge/etc" "$ROOT/munge/lib" "$ROOT/munge/log"
    chmod 755 "$ROOT/munge/run"   # clients (any user) must reach the socket
    chmod 600 "$ROOT/munge/etc/munge.key"
    runuser -u munge -- munged \
        --key-file="$ROOT/munge/etc/munge.key" \
        --socket="$ROOT/munge/run/munge.socket" \
        --pid-file="$ROOT/munge/run/munged.pid" \
        --seed-file="$ROOT/munge/lib/munged.seed" \
        --log-file="$ROOT/munge/log/munged.log"
    wait_for 10 "munged" munge --socket="$ROOT/munge/run/munge.socket" -n
}

# A throw-away DB: no fsyncs, small buffers (it holds a handful of rows). Used by install-db and the server.
DB_TUNING=(--innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --innodb-flush-method=nosync
           --innodb-buffer-pool-size=64M --innodb-log-file-size=16M)

db_client() { mariadb --no-defaults --socket="$ROOT/mysql/mysqld.sock" -u root "$@"; }

start_mariadb() {
    # Everything MariaDB writes lives under $ROOT/mysql, owned by user mysql (mariadbd refuses to run as root).
    mkdir -p "$ROOT/mysql/data"
    chown -R mysql:mysql "$ROOT/mysql"
    mariadb-install-db --no-defaults --datadir="$ROOT/mysql/data" --user=mysql \
        --auth-root-authentication-method=socket --skip-test-db "${DB_TUNING[@]}" > "$ROOT/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed, see $ROOT/log/mariadb-install.log"
    # mariadbd does not daemonize; detach it from this shell.
    setsid mariadbd --no-defaults --user=mysql --datadir="$ROOT/mysql/data" \
        --socket="$ROOT/mysql/mysqld.sock" --pid-file="$ROOT/mysql/mariadbd.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        "${DB_TUNING[@]}" --innodb-lock-wait-timeout=900 \
        --log-error="$ROOT/mysql/mariadbd.log" < /dev/null > /dev/null 2>&1 &
    wait_for 30 "MariaDB" db_client -e "SELECT 1"
    db_client <<EOF
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$ROOT/etc/db_password")';
CREATE DATABASE slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurm() {
    export SLURM_CONF="$CONF"
    slurmdbd
    wait_for 30 "slurmdbd" sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" > /dev/null
    slurmctld
    wait_for 30 "slurmctld" scontrol ping
    slurmd -N "$HOST"
    local n
    for n in "${FAKE_NODES[@]}"; do slurmd -N "$n"; done
    wait_for 60 "all nodes idle" all_nodes_idle
}

all_nodes_idle() {
    local states
    states="$(sinfo -h -N -o '%t' | sort -u)"
    [ "$states" = "idle" ] && [ "$(sinfo -h -N -o '%N' | sort -u | wc -l)" -eq $((1 + ${#FAKE_NODES[@]})) ]
}

cmd_start() {
    [ "$(id -u)" -eq 0 ] || die "start needs root"
    local running total
    total="$(daemon_pidfiles | wc -l)"
    if [ -d "$ROOT" ]; then
        running="$(count_running)"
        if [ "$running" -eq "$total" ]; then
            log "already running (all $total daemons alive) — nothing to do. Use 'restart' for a fresh cluster."
            return 0
        fi
        if [ "$running" -gt 0 ]; then
            log "only $running of $total daemons alive — stopping them and starting fresh"
            cmd_stop
        fi
    fi
    local t0=$SECONDS
    cmd_install
    ensure_hosts

    # Fresh state on every start: wipe $ROOT, but only if it is empty or carries our marker.
    if [ -d "$ROOT" ] && [ -n "$(ls -A "$ROOT")" ] && [ ! -e "$MARKER" ]; then
        die "$ROOT exists, is not empty and was not created by this script; refusing to wipe it"
    fi
    [ -n "$ROOT" ] && [ "$ROOT" != "/" ] || die "refusing RESEARCH_OPTIM_SLURM_DIR='$ROOT'"
    rm -rf "$ROOT"
    mkdir -p "$ROOT/etc" "$ROOT/run" "$ROOT/log" "$ROOT/state"
    chmod 755 "$ROOT"
    touch "$MARKER"

    write_config
    local conf_is_system=0
    link_system_conf && conf_is_system=1
    start_munge
    start_mariadb
    start_slurm

    log "started in $((SECONDS - t0)) s: munged, mariadbd, slurmdbd, slurmctld, slurmd($HOST), slurmd(n1), slurmd(n2)"
    log "cluster '$CLUSTER'; partitions: debug (default, node $HOST) and multi (nodes n1,n2 for multi-node jobs)"
    log "config, state and logs: $ROOT"
    if [ $conf_is_system -eq 1 ]; then
        log "clients: $SYSTEM_CONF -> $CONF, plain sbatch/sacct/submitit work as-is"
    else
        log "clients: export SLURM_CONF=$CONF"
    fi
    log "fresh state: job ids do not continue from a previous cluster — use a fresh submitit folder per start"
    sinfo
}

# ----------------------------------------------------------------------------------------------- stop
cancel_all_jobs() {
    # Jobs' slurmstepd processes would outlive their slurmd; end them while the controller still runs.
    local jobs
    jobs="$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" || return 0
    [ -n "$jobs" ] || return 0
    log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
    # shellcheck disable=SC2086
    SLURM_CONF="$CONF" scancel $jobs || true
    local deadline=$((SECONDS + 15))
    while [ -n "$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
}

cmd_stop() {
    local entries entry name pidfile pid i stopped=0
    if [ -e "$CONF" ] && pid_alive "$ROOT/run/slurmctld.pid" >/dev/null; then cancel_all_jobs; fi
    mapfile -t entries < <(daemon_pidfiles)
    for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
        entry="${entries[$i]}"
        name="${entry%%:*}"
        pidfile="${entry#*:}"
        pid="$(pid_alive "$pidfile")" || continue
        kill "$pid"
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null; do
            if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null || true; fi
            sleep 0.1
        done
        log "stopped $name (pid $pid)"
        stopped=$((stopped + 1))
    done
    [ $stopped -gt 0 ] || log "nothing was running"
    # Leave no dangling client config behind that points at a dead cluster.
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then rm -f "$SYSTEM_CONF"; fi
}

# ----------------------------------------------------------------------------------------------- status
cmd_status() {
    local entry name pidfile pid
    log "base directory: $ROOT"
    while IFS= read -r entry; do
        name="${entry%%:*}"
        pidfile="${entry#*:}"
        if pid="$(pid_alive "$pidfile")"; then
            printf '  %-14s running (pid %s)\n' "$name" "$pid"
        else
            printf '  %-14s stopped\n' "$name"
        fi
    done < <(daemon_pidfiles)
    if [ -e "$CONF" ] && pid_alive "$ROOT/run/slurmctld.pid" >/dev/null; then
        SLURM_CONF="$CONF" sinfo
    fi
}

cmd_env() {
    echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ] && exit 2 || exit 0 ;;
esac
