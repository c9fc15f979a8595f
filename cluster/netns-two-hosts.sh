#!/bin/bash
# Two "hosts" on one machine: runs `kaleido` with one rank in each of two Linux network
# namespaces joined by a veth pair, so the ranks can only talk over TCP between two IP addresses,
# as two nodes of a cluster do. Tests the multi-node launch path (hostfile, remote orted, TCP
# transport, out-of-band wiring) without a second machine. Needs root (CAP_NET_ADMIN).
#
#   cluster/netns-two-hosts.sh [--kaleido PATH] -- pretrain --set run.steps=4 ...
#
# Layout: namespace A holds 10.77.0.1, namespace B 10.77.0.2 (a private /24 that exists only
# inside the two namespaces). mpirun runs in A with the hostfile "10.77.0.1 slots=1,
# 10.77.0.2 slots=1"; to start the daemon (orted) on "host" 10.77.0.2 it calls this script as
# its rsh agent instead of ssh, which runs the command in namespace B with `ip netns exec`.
# Both ranks see the same file system (the run's output directory is shared, as on a cluster).
# The namespaces and the veth pair are removed on exit, whatever the outcome.
set -u

# rsh-agent mode: mpirun calls `AGENT [ssh options] HOST COMMAND...`; run COMMAND in HOST's namespace.
if [ "${1:-}" = "--rsh-agent" ]; then
    shift
    while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done   # ssh options mpirun may add
    host=$1
    shift
    case "$host" in
        "$KALEIDO_NETNS_IP_B") namespace=$KALEIDO_NETNS_B ;;
        "$KALEIDO_NETNS_IP_A") namespace=$KALEIDO_NETNS_A ;;
        *) echo "netns-two-hosts.sh: unknown host '$host' (expected $KALEIDO_NETNS_IP_A or $KALEIDO_NETNS_IP_B)" >&2; exit 255 ;;
    esac
    echo "netns-two-hosts.sh: starting the Open MPI daemon of host $host in network namespace $namespace" >&2
    # ssh hands the remote shell one command line; do the same.
    exec ip netns exec "$namespace" /bin/sh -c "$*"
fi

kaleido=kaleido
while [ $# -gt 0 ]; do
    case "$1" in
        --kaleido) kaleido=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "netns-two-hosts.sh: unknown option $1 (kaleido arguments go after --)" >&2; exit 2 ;;
    esac
done

# Unique names per run, so concurrent runs do not collide (interface names: 15 characters at most).
id=$$
export KALEIDO_NETNS_A=kaleido-a-$id KALEIDO_NETNS_B=kaleido-b-$id
export KALEIDO_NETNS_IP_A=10.77.0.1 KALEIDO_NETNS_IP_B=10.77.0.2
veth_a=kva$id veth_b=kvb$id
work=$(mktemp -d /tmp/kaleido-netns.XXXXXX)

cleanup() {
    ip netns del "$KALEIDO_NETNS_A" 2>/dev/null   # takes the veth pair with it
    ip netns del "$KALEIDO_NETNS_B" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$KALEIDO_NETNS_A" || { echo "netns-two-hosts.sh: cannot create network namespaces (needs root / CAP_NET_ADMIN)" >&2; exit 77; }
ip netns add "$KALEIDO_NETNS_B" || exit 77
ip link add "$veth_a" type veth peer name "$veth_b" || exit 77
ip link set "$veth_a" netns "$KALEIDO_NETNS_A"
ip link set "$veth_b" netns "$KALEIDO_NETNS_B"
ip -n "$KALEIDO_NETNS_A" addr add "$KALEIDO_NETNS_IP_A/24" dev "$veth_a"
ip -n "$KALEIDO_NETNS_B" addr add "$KALEIDO_NETNS_IP_B/24" dev "$veth_b"
for ns in "$KALEIDO_NETNS_A" "$KALEIDO_NETNS_B"; do ip -n "$ns" link set lo up; done
ip -n "$KALEIDO_NETNS_A" link set "$veth_a" up
ip -n "$KALEIDO_NETNS_B" link set "$veth_b" up

printf '%s slots=1\n%s slots=1\n' "$KALEIDO_NETNS_IP_A" "$KALEIDO_NETNS_IP_B" > "$work/hostfile"
script=$(readlink -f "$0")
printf '#!/bin/sh\nexec %s --rsh-agent "$@"\n' "$script" > "$work/agent"
chmod +x "$work/agent"

# TCP only (no shared memory between the "hosts"), on the veth subnet only, for both the ranks'
# traffic (btl) and the runtime's own wiring (oob). One rank per host.
ip netns exec "$KALEIDO_NETNS_A" mpirun -np 2 --hostfile "$work/hostfile" --map-by node --bind-to none \
    --mca plm_rsh_agent "$work/agent" --mca plm_rsh_no_tree_spawn 1 \
    --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
    "$kaleido" "$@"
