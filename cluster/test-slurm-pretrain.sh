#!/bin/bash
# Exercises slurm-pretrain.sbatch without Slurm: stub `srun`, `scontrol` and `kaleido` on PATH,
# SLURM_* variables set by hand, SIGUSR1 sent to the batch shell as `--signal=B:USR1@120` would.
# Checks that the signal reaches the job step, the step's exit status is the script's, and the job
# is requeued exactly once, from the batch shell, and not again on the requeued run.
# Not covered (needs a real Slurm): sbatch option parsing, srun's own forwarding of SIGUSR1 to
# remote tasks, and what scontrol requeue does.
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# srun: run the command in place, like a one-task step (exec keeps the pid the script signals).
cat > "$work/bin/srun" <<'STUB'
#!/bin/bash
echo "$*" > "$STUB_LOG/srun"
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
exec "$@"
STUB
cat > "$work/bin/scontrol" <<'STUB'
#!/bin/bash
echo "$*" >> "$STUB_LOG/scontrol"
STUB
# kaleido: record the arguments, then train until SIGUSR1, save and exit 0 (or exit at once
# with STUB_EXIT when no signal is expected).
cat > "$work/bin/kaleido" <<'STUB'
#!/bin/bash
echo "$*" > "$STUB_LOG/args"
trap 'echo USR1 >> "$STUB_LOG/signals"; exit 0' USR1
touch "$STUB_LOG/started"
if [ -n "${STUB_EXIT:-}" ]; then exit "$STUB_EXIT"; fi
for _ in $(seq 1 300); do sleep 0.1; done
exit 3
STUB
chmod +x "$work/bin/"*

# run NAME RESTART_COUNT SIGNAL(or "") [STUB_EXIT]
run() {
    local name=$1 restarts=$2 signal=$3 exit_code=${4:-}
    local log="$work/$name"
    mkdir -p "$log"
    (
        export PATH="$work/bin:$PATH" STUB_LOG="$log" SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=$restarts \
               SLURM_SUBMIT_DIR="$log" SLURM_CPUS_PER_TASK=2 STUB_EXIT=$exit_code
        exec bash "$here/slurm-pretrain.sbatch" --config configs/debug.yaml
    ) 2> "$log/stderr" &
    local pid=$!
    if [ -n "$signal" ]; then
        # Up to 30 s: on a loaded machine (the whole test suite at once) starting the three
        # shells can take several seconds, and a signal sent earlier finds no step to forward to.
        for _ in $(seq 1 600); do [ -e "$log/started" ] && break; sleep 0.05; done
        kill "-$signal" "$pid"
        sleep 0.2
        kill "-$signal" "$pid" 2>/dev/null   # a second signal must not cause a second requeue
    fi
    wait "$pid"
    echo $? > "$log/status"
}

run signalled 0 USR1
grep -q -- "pretrain --resume auto --config configs/debug.yaml" "$work/signalled/args" || fail "kaleido not started with --resume auto and the user's options"
[ "$(cat "$work/signalled/signals" 2>/dev/null | head -1)" = USR1 ] || fail "SIGUSR1 did not reach the job step"
grep -q -- "--mpi=pmix" "$work/signalled/srun" || fail "srun launched without a PMI plugin (--mpi=pmix): $(cat "$work/signalled/srun")"
[ "$(cat "$work/signalled/status")" = 0 ] || fail "script exit status $(cat "$work/signalled/status"), expected the step's 0"
[ "$(cat "$work/signalled/scontrol" 2>/dev/null)" = "requeue 4242" ] || fail "expected exactly one 'scontrol requeue 4242', got: $(cat "$work/signalled/scontrol" 2>/dev/null)"

run requeued 1 USR1
[ ! -e "$work/requeued/scontrol" ] || fail "the requeued run requeued again"
[ "$(cat "$work/requeued/signals" 2>/dev/null | head -1)" = USR1 ] || fail "SIGUSR1 did not reach the job step of the requeued run"

run terminated 0 TERM
[ "$(cat "$work/terminated/signals" 2>/dev/null | head -1)" = USR1 ] || fail "SIGTERM was not forwarded as SIGUSR1"
[ "$(cat "$work/terminated/scontrol" 2>/dev/null)" = "requeue 4242" ] || fail "SIGTERM did not requeue once"

run finished 0 "" 0
[ ! -e "$work/finished/scontrol" ] || fail "a run that finished without a signal requeued"
[ "$(cat "$work/finished/status")" = 0 ] || fail "finished run: status $(cat "$work/finished/status")"

run crashed 0 "" 7
[ ! -e "$work/crashed/scontrol" ] || fail "a crashed run without a signal requeued"
[ "$(cat "$work/crashed/status")" = 7 ] || fail "crashed run: status $(cat "$work/crashed/status"), expected 7"

if [ "$failures" -gt 0 ]; then
    echo "--- batch shell log of the signalled run:" >&2
    cat "$work/signalled/stderr" >&2
    exit 1
fi
echo "slurm-pretrain.sbatch: signal forwarding and single requeue OK (5 scenarios)"
