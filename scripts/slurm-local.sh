#!/bin/bash
# A real single-node SLURM (munge + slurmctld + slurmd from Debian's packages) on 127.0.0.1,
# for the tests and for trying `treediff submit slurm` on one machine. Needs root.
#
#   bash scripts/slurm-local.sh start    install what is missing, write the config, start the daemons
#   bash scripts/slurm-local.sh stop     stop the daemons this script started (by PID, nothing else)
#   bash scripts/slurm-local.sh status
#
# The config is ../shared/notes/slurm.conf.example's: loopback addresses, cgroup process tracking
# (every process of a job, daemonized Ray included, dies with the job), batch_sched_delay=0.
set -euo pipefail

RUN=/run/slurm-local
CONF=/etc/slurm/slurm.conf

die() {
    echo "slurm-local: ERROR: $*" >&2
    for log in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

alive() { # PID file -> running (zombies count as dead)
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1")
    [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sbatch munged; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "not root: cannot install slurmctld slurmd slurm-client munge"
    # package scripts must not start daemons with the stock (missing) config
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; } ||
        { [ $created -eq 1 ] && rm -f "$policy"; die "apt-get install failed"; }
    [ $created -eq 1 ] && rm -f "$policy"
    return 0
}

write_config() {
    local node proctrack tmp
    node=$(slurmd -C | head -n 1 | sed -e "s/^NodeName=[^ ]*/NodeName=$(hostname -s) NodeAddr=127.0.0.1/" -e 's/ UpTime=.*//')
    proctrack=proctrack/linuxproc
    if mkdir -p /sys/fs/cgroup/freezer/slurm-local-probe 2>/dev/null; then
        rmdir /sys/fs/cgroup/freezer/slurm-local-probe
        proctrack=proctrack/cgroup
    fi
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$RUN"
    chown slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
    tmp=$(mktemp)
    cat >"$tmp" <<CONF
# Written by scripts/slurm-local.sh: single node, loopback only.
ClusterName=local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=$proctrack
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
KillWait=5
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    if ! cmp -s "$tmp" "$CONF"; then
        mv "$tmp" "$CONF"
        stop_daemons # a changed config needs both daemons restarted
    else
        rm -f "$tmp"
    fi
    chmod 644 "$CONF"
    printf 'CgroupPlugin=cgroup/v1\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n' >/etc/slurm/cgroup.conf
}

start_daemons() {
    install -d -o munge /run/munge
    [ -f /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || die "no munge key"; chown munge /etc/munge/munge.key; }
    if ! alive "$RUN/munged.pid"; then  # munged writes its PID file as the munge user
        runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid || die "munged did not start"
        for _ in $(seq 1 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
        cp /run/munge/munged.pid "$RUN/munged.pid"
    fi
    if ! alive /run/slurmctld.pid; then slurmctld || die "slurmctld did not start"; fi
    if ! alive /run/slurmd.pid; then slurmd || die "slurmd did not start"; fi
    local f
    for f in slurmctld slurmd; do  # the daemons write their PID files once they have forked
        for _ in $(seq 1 50); do [ -s "/run/$f.pid" ] && break; sleep 0.1; done
        [ -s "/run/$f.pid" ] || die "$f wrote no PID file"
        cp "/run/$f.pid" "$RUN/$f.pid"
    done
    for _ in $(seq 1 100); do
        state=$(sinfo -h -o '%T' 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*) echo "slurm-local: node $state"; return 0 ;;
            down*|drain*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    die "the node did not become idle (sinfo: ${state:-nothing})"
}

stop_daemons() {
    local f pid
    for f in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$RUN/munged.pid"; do
        if alive "$f"; then
            pid=$(cat "$f"); kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do alive "$f" || break; sleep 0.1; done
            if alive "$f"; then kill -9 "$pid" 2>/dev/null || true; fi
        fi
        rm -f "$f"
    done
    rm -f /run/slurmctld.pid /run/slurmd.pid
}

case "${1:-}" in
    start) install_packages; write_config; start_daemons ;;
    stop) stop_daemons; echo "slurm-local: stopped" ;;
    status) sinfo; squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
