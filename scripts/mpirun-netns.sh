#!/usr/bin/env bash
# An MPI job across "hosts" on one machine: each host is a Linux network namespace with its own
# address (10.231.0.1, .2, …) and a veth link to a bridge in a switch namespace, so the ranks
# talk over TCP exactly as on a cluster (Open MPI's tcp transport; shared memory is not used
# between hosts). mpirun runs in the first host and starts the others through an rsh agent that
# enters their namespace. The "hosts" share this machine's cores, so ranks are not bound to cores
# (each host would bind its first rank to core 0). Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)
# and iproute2's `ip`.
#
#   scripts/mpirun-netns.sh HOSTS RANKS_PER_HOST program [arguments…]
#
# Everything it creates is removed on exit. Example (2 hosts, 1 rank each):
#   scripts/mpirun-netns.sh 2 1 .build/release/search-cifar --dataset fashion-mnist --subset 512 …
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 HOSTS RANKS_PER_HOST program [arguments…]" >&2
  exit 2
fi
hosts=$1 per_host=$2
shift 2
[ "$hosts" -ge 1 ] && [ "$hosts" -le 200 ] || { echo "error: HOSTS must lie in 1...200, got $hosts" >&2; exit 2; }
prefix=pcd$$
work=$(mktemp -d)
cleanup() {
  for ((i = 0; i < hosts; i++)); do ip netns del "${prefix}h$i" 2>/dev/null || true; done
  ip netns del "${prefix}sw" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
if ! ip netns add "${prefix}sw" 2>"$work/err"; then
  echo "error: cannot create network namespaces here ($(cat "$work/err")): run as root on a machine that allows them" >&2
  exit 1
fi
ip -n "${prefix}sw" link add br0 type bridge
ip -n "${prefix}sw" link set br0 up
for ((i = 0; i < hosts; i++)); do
  ns=${prefix}h$i
  ip netns add "$ns"
  ip link add "${prefix}v$i" type veth peer name "${prefix}s$i"
  ip link set "${prefix}v$i" netns "$ns"
  ip link set "${prefix}s$i" netns "${prefix}sw"
  ip -n "$ns" link set "${prefix}v$i" name eth0
  ip -n "$ns" addr add "10.231.0.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "${prefix}sw" link set "${prefix}s$i" master br0
  ip -n "${prefix}sw" link set "${prefix}s$i" up
  echo "10.231.0.$((i + 1)) slots=$per_host" >>"$work/hostfile"
done
# The rsh agent: `agent HOST COMMAND…` runs COMMAND in HOST's namespace.
cat >"$work/agent" <<AGENT
#!/bin/sh
host=\$1
shift
exec ip netns exec "${prefix}h\$((\${host##*.} - 1))" sh -c "\$*"
AGENT
chmod +x "$work/agent"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ip netns exec "${prefix}h0" mpirun --hostfile "$work/hostfile" -np $((hosts * per_host)) --bind-to none \
  --mca plm_rsh_agent "$work/agent" --mca btl tcp,self \
  --mca btl_tcp_if_include 10.231.0.0/24 --mca oob_tcp_if_include 10.231.0.0/24 "$@"
