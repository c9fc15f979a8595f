#!/bin/bash
# Kaleido pretraining with Open MPI's mpirun, outside Slurm, resuming from the newest valid
# checkpoint of the run.
#
#   cluster/mpirun-pretrain.sh -n 8 --hostfile cluster/hostfile.example -- --config configs/relicv2-resnet50.yaml
#
# Options before `--` go to this script, everything after it to `kaleido pretrain`.
#   -n RANKS           total ranks (default 4)
#   --hostfile FILE    Open MPI hostfile (default: all ranks on this machine)
#   --restarts N       relaunch up to N times after a failure exit (default 0); each relaunch
#                      resumes from the newest valid checkpoint
# SIGTERM or SIGINT to this script is forwarded to mpirun as SIGUSR1, which mpirun passes on to the
# ranks: they finish the step, save a checkpoint and exit 0.
set -u

ranks=4
hostfile=""
restarts=0
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--np) ranks=$2; shift 2 ;;
        --hostfile) hostfile=$2; shift 2 ;;
        --restarts) restarts=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "mpirun-pretrain.sh: unknown option $1 (pretrain options go after --)" >&2; exit 2 ;;
    esac
done

KALEIDO=${KALEIDO:-kaleido}
launch=(mpirun -np "$ranks" --bind-to none)
[ -n "$hostfile" ] && launch+=(--hostfile "$hostfile")

mpirun_pid=""
stopping=""
forward() {
    stopping=1
    [ -n "$mpirun_pid" ] && kill -USR1 "$mpirun_pid" 2>/dev/null
}
trap forward TERM INT USR1

attempt=0
while :; do
    "${launch[@]}" "$KALEIDO" pretrain --resume auto "$@" &
    mpirun_pid=$!
    while :; do
        wait "$mpirun_pid"
        status=$?
        if [ "$status" -gt 128 ] && kill -0 "$mpirun_pid" 2>/dev/null; then continue; fi
        break
    done
    if [ "$status" -eq 0 ] || [ -n "$stopping" ] || [ "$attempt" -ge "$restarts" ]; then exit "$status"; fi
    attempt=$((attempt + 1))
    echo "mpirun-pretrain.sh: exit status $status; relaunch $attempt of $restarts from the newest valid checkpoint" >&2
done
