#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages, for testing the workflow's
# SLURM profile against a real scheduler (tests/test_slurm.py).
#
#   tools/slurm_local.sh start    install what is missing (as root), write the config, start the
#                                 daemons and wait until the node is idle (again: nothing to do)
#   tools/slurm_local.sh stop     stop every daemon this script started
#   tools/slurm_local.sh status   say what runs; print the line that points a shell at it
#   tools/slurm_local.sh env      print only that line (`export SLURM_CONF=... PATH=...`)
#   tools/slurm_local.sh install  only install the packages (as root; CI does this up front)
#
# Everything lives under one state directory, $SLURM_LOCAL_DIR (default /tmp/slurm-local):
#   etc/slurm.conf, etc/gres.conf       the cluster's config (clients read it via SLURM_CONF)
#   dev/fake-gpu<N>                     stand-in GPUs, where asked for (SLURM_LOCAL_GPUS)
#   munge/munge.key, munge/munge.socket a private munged: the system's munge is left alone
#   spool/ctld, spool/d                 slurmctld's state and slurmd's spool
#   log/*.log, run/*.pid                each daemon's log and pid file
#   bin/srun, bin/sbatch, ...          the client commands with SLURM_CONF set (see below)
# Clients (sbatch, squeue, scontrol, and Snakemake's SLURM executor) find the cluster through
#   export SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf PATH=$SLURM_LOCAL_DIR/bin:$PATH
# (`tools/slurm_local.sh env` prints that line), so nothing is written to /etc. Jobs inherit both
# (sbatch --export=ALL). The PATH part is for Snakemake's jobs: inside a job, the slurm-jobstep
# executor (0.6.1) removes every SLURM_* variable but a few, SLURM_CONF too, before it calls srun;
# bin/srun puts it back. (On a real cluster /etc/slurm/slurm.conf, or configless slurmd, makes
# this moot.)
#
# The node is this machine with its real CPUs and memory (slurmd -C), in one partition `debug`,
# the default. No accounting database: Snakemake's SLURM executor needs none when told to query
# job states with squeue (--slurm-status-command squeue); the jobs stay visible to squeue and
# scontrol for MinJobAge (10 minutes) after they end.
#
# Settings (environment):
#   SLURM_LOCAL_DIR    the state directory
#   SLURM_LOCAL_PORT   slurmctld's port; slurmd listens on the next one (default 6817)
#   SLURM_LOCAL_GPUS   GPUs the node offers (default: the NVIDIA devices /dev/nvidia<N>); where
#                      there are fewer devices than that, stand-ins: the scheduler allocates
#                      them but they are no devices (to test how jobs ask for GPUs)
set -euo pipefail

STATE=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
PORT=${SLURM_LOCAL_PORT:-6817}
CONF=$STATE/etc/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
PARTITION=debug

say() { echo "slurm_local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# --- installation -----------------------------------------------------------------------------

missing_packages() {
    local package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || echo "$package"
    done
}

install_packages() {
    local missing=()
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" = 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        die "SLURM is not installed (missing: ${missing[*]}) and only root can install it; run" \
            "'sudo apt-get install --no-install-recommends ${missing[*]}' (or run this as root)"
    fi
    command -v apt-get >/dev/null || die "${missing[*]} missing, and no apt-get to install them"
    say "installing ${missing[*]}"
    # The packages' own services stay down (they find no /etc/slurm/slurm.conf): this cluster
    # runs its daemons from the state directory.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# --- configuration ----------------------------------------------------------------------------

# The node's real resources as slurmd sees them (CPUs, sockets, cores, threads, memory).
node_line() {
    local line memory
    line=$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -1) || true
    [ -n "$line" ] || die "slurmd -C could not describe this machine"
    # Leave 5% of the memory (at least 512 MB) to the system and the daemons.
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")
    local reserve=$(( memory / 20 > 512 ? memory / 20 : 512 ))
    line=$(sed "s/RealMemory=[0-9]*/RealMemory=$(( memory - reserve ))/; s/ UpTime=.*//" <<<"$line")
    # The node's name is the host's short name, as slurmd will call itself.
    echo "NodeName=$(hostname -s) ${line#NodeName=* }"
}

# bin/<command>: each SLURM client command, run with this cluster's SLURM_CONF.
write_client_wrappers() {
    local command real
    mkdir -p "$STATE/bin"
    for command in sbatch srun salloc squeue scontrol scancel sinfo sacct sstat; do
        real=$(PATH=/usr/local/bin:/usr/bin:/bin command -v "$command") || continue
        printf '#!/bin/sh\n# tools/slurm_local.sh: %s on the cluster in %s\n%s\n' \
            "$command" "$STATE" "SLURM_CONF=$CONF exec $real \"\$@\"" >"$STATE/bin/$command"
        chmod 755 "$STATE/bin/$command"
    done
}

# The NVIDIA GPUs' device files, one a line.
gpu_devices() {
    local device
    for device in /dev/nvidia[0-9] /dev/nvidia[0-9][0-9]; do
        [ -c "$device" ] && echo "$device"
    done
    return 0
}

write_config() {
    local host gpus devices
    host=$(hostname -s)
    devices=$(gpu_devices)
    gpus=${SLURM_LOCAL_GPUS:-$(grep -c . <<<"$devices" || true)}
    mkdir -p "$STATE"/{etc,munge,spool/ctld,spool/d,log,run}
    chmod 700 "$STATE/munge"

    local gres="" i
    : >"$STATE/etc/gres.conf"
    if [ "$gpus" -gt 0 ]; then
        gres=" Gres=gpu:$gpus"
        if [ "$(grep -c . <<<"$devices" || true)" -ge "$gpus" ]; then
            head -n "$gpus" <<<"$devices" | sed 's/^/Name=gpu File=/' >"$STATE/etc/gres.conf"
        else
            # Stand-ins: SLURM wants a device file per GPU (it drops file-less ones), so each is
            # a link to /dev/null. Jobs are allocated them, and find no GPU.
            say "fewer than $gpus NVIDIA devices here: the node offers $gpus stand-in GPUs"
            mkdir -p "$STATE/dev"
            for i in $(seq 0 $(( gpus - 1 ))); do
                ln -sfn /dev/null "$STATE/dev/fake-gpu$i"
                echo "Name=gpu File=$STATE/dev/fake-gpu$i" >>"$STATE/etc/gres.conf"
            done
        fi
    fi

    cat >"$CONF" <<EOF
# Written by tools/slurm_local.sh: a one-node cluster on $host. Edits are overwritten on start.
ClusterName=local
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
SlurmUser=root
SlurmdUser=root
# A private munged (see munge/ beside etc/).
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups needed (containers often lack them): processes are tracked through /proc, and each
# job's tasks are bound to the CPUs it was given.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SwitchType=switch/none
# CPUs and memory are both consumable: a job gets the cores and the memory it asks for.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
# No accounting database: finished jobs stay in slurmctld's memory (squeue, scontrol) for
# MinJobAge seconds, long enough for Snakemake's squeue-based status checks.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MinJobAge=600
# A cancelled job's processes get SIGTERM, then SIGKILL after KillWait seconds.
KillWait=10
InactiveLimit=0
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=60
$(node_line)$gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

# The line that points a shell at this cluster.
env_line() { echo "export SLURM_CONF=$CONF PATH=$STATE/bin:\$PATH"; }

# --- daemons ----------------------------------------------------------------------------------

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A client command on this cluster; none waits long for an absent slurmctld.
client() { SLURM_CONF=$CONF timeout 20 "$@"; }

# The last lines of a daemon's log that say why it stopped.
last_errors() { grep -E 'fatal|error' "$STATE/log/$1.log" 2>/dev/null | tail -3 || true; }

start_munge() {
    if pid_alive "$STATE/run/munged.pid"; then return 0; fi
    if [ ! -s "$STATE/munge/munge.key" ]; then
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$STATE/munge/munge.key"
    fi
    munged --force \
        --socket="$STATE/munge/munge.socket" \
        --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed" \
        || die "munged did not start; see $STATE/log/munged.log"
    # A credential must round-trip through the new munged before SLURM can use it.
    local i
    for i in $(seq 50); do
        munge -n -S "$STATE/munge/munge.socket" 2>/dev/null \
            | unmunge -S "$STATE/munge/munge.socket" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged does not answer on $STATE/munge/munge.socket; see $STATE/log/munged.log"
}

start_daemon() {  # start_daemon NAME: slurmctld or slurmd, unless it runs already
    local name=$1
    if pid_alive "$STATE/run/$name.pid"; then return 0; fi
    # -i (slurmctld): ignore saved state of a previous run's jobs if it does not fit the config.
    local options=()
    [ "$name" = slurmctld ] && options=(-i)
    SLURM_CONF=$CONF "$name" -f "$CONF" "${options[@]}" \
        || die "$name did not start; see $STATE/log/$name.log"
    # The daemon writes its pid file a moment after it forks into the background.
    local i
    for i in $(seq 100); do
        pid_alive "$STATE/run/$name.pid" && return 0
        sleep 0.1
    done
    die "$name did not come up; see $STATE/log/$name.log:"$'\n'"$(last_errors "$name")"
}

wait_until_idle() {
    local host state="" name
    host=$(hostname -s)
    SECONDS=0
    while [ "$SECONDS" -lt 60 ]; do
        for name in slurmctld slurmd; do
            pid_alive "$STATE/run/$name.pid" \
                || die "$name stopped; see $STATE/log/$name.log:"$'\n'"$(last_errors "$name")"
        done
        state=$(client sinfo -h -n "$host" -o '%T' 2>/dev/null | head -1 || true)
        case "$state" in
            idle|mixed|allocated) return 0 ;;
            down*|drain*|fail*)
                # A node left down by an earlier run (e.g. its slurmd was killed): bring it back.
                client scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "the node is not idle after 60 s (state: '${state:-no answer}'); see" \
        "$STATE/log/slurmctld.log and $STATE/log/slurmd.log"
}

start() {
    install_packages
    mkdir -p "$STATE"
    write_client_wrappers
    local running=true name
    for name in munged slurmctld slurmd; do pid_alive "$STATE/run/$name.pid" || running=false; done
    if $running; then
        say "already running (state in $STATE)"
    else
        [ "$(id -u)" = 0 ] || die "the daemons run as root here: run 'sudo $0 start'"
        # The config describes the machine now; only write it while no daemon uses it.
        pid_alive "$STATE/run/slurmctld.pid" || pid_alive "$STATE/run/slurmd.pid" || write_config
        start_munge
        start_daemon slurmctld
        start_daemon slurmd
    fi
    wait_until_idle
    say "node $(hostname -s) is up: $(client sinfo -h -N -o '%N %c CPUs %m MB %G %T' | head -1)"
    env_line
}

stop_pid() {  # stop_pid NAME: SIGTERM, wait up to 20 s, then SIGKILL
    local name=$1 file=$STATE/run/$1.pid pid i
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name ($pid) ignored SIGTERM: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

stop() {
    local name
    for name in munged slurmctld slurmd; do
        if pid_alive "$STATE/run/$name.pid" && [ "$(id -u)" != 0 ]; then
            die "the daemons run as root: run 'sudo $0 stop'"
        fi
    done
    # Jobs still running would outlive slurmd (each under its own slurmstepd): cancel them first.
    if pid_alive "$STATE/run/slurmctld.pid"; then
        client scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
        local i
        for i in $(seq 60); do
            [ -z "$(client squeue -h -t running,completing,pending 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
    # A job's step daemons (slurmstepd) normally end with its job; any left over would hold on
    # to this cluster: they inherited SLURM_CONF from slurmd, so find them by it.
    local proc stray=()
    for proc in /proc/[0-9]*; do
        [ "$(cat "$proc/comm" 2>/dev/null)" = slurmstepd ] || continue
        if tr '\0' '\n' <"$proc/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF"; then
            stray+=("${proc#/proc/}")
        fi
    done
    if [ "${#stray[@]}" -gt 0 ]; then
        say "killing leftover step daemons: ${stray[*]}"
        kill -KILL "${stray[@]}" 2>/dev/null || true
    fi
    say "stopped (state kept in $STATE)"
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive "$STATE/run/$name.pid"; then
            echo "$name: running (pid $(cat "$STATE/run/$name.pid"))"
        else
            echo "$name: stopped"; rc=3
        fi
    done
    if [ "$rc" = 0 ]; then
        client sinfo -N -o '%N %P %c %m %G %T'
        env_line
    fi
    return "$rc"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) env_line ;;
    install) install_packages ;;
    *)
        echo "usage: $0 start|stop|status|env|install" \
             "(state in \$SLURM_LOCAL_DIR, default /tmp/slurm-local)" >&2
        exit 2 ;;
esac
