#!/usr/bin/env bash
# A lab of hosts on one machine (root): network namespaces for hosts A (primary), B (backup),
# C (spare), S (storage: NBD and etcd) and K (clients), joined by a Linux bridge, as in a
# datacenter. Each of A, B, C has a bridge br0 holding its uplink and a TAP device vm0 for a
# VM's NIC, so a VM there sits on the LAN itself (no ftvm switch): a client in K reaches the
# guest's own address with the kernel's TCP, and a failover moves the guest's MAC from A's
# port to B's on the LAN bridge.
#
#   scripts/lab.sh up [--delay MS]   build it (links delayed by netem, default 0.2 ms, if the
#                                    kernel has netem; said if it has not)
#   scripts/lab.sh down              remove it
#   scripts/lab.sh exec HOST CMD...  run CMD on HOST (A, B, C, S or K)
#   scripts/lab.sh addr HOST         the host's LAN address
#   scripts/lab.sh cut HOST [HOST2]  cut HOST from everything (or only from HOST2)
#   scripts/lab.sh heal HOST [HOST2] undo that
#
# Addresses: 10.77.0.0/24; A .11, B .12, C .13, S .20, K .30; guests take .100 and up.
# FTVM_LAB (default "ftvm") prefixes every namespace and device, so two labs can coexist.
set -euo pipefail

lab=${FTVM_LAB:-ftvm}
hosts=(A B C S K)
vm_hosts=(A B C)

addr_of() {
    case "$1" in
        A) echo 10.77.0.11 ;; B) echo 10.77.0.12 ;; C) echo 10.77.0.13 ;;
        S) echo 10.77.0.20 ;; K) echo 10.77.0.30 ;;
        *) echo "lab.sh: no host $1 (A, B, C, S, K)" >&2; exit 2 ;;
    esac
}

ns() { echo "$lab-$1"; }

up() {
    local delay=0.2
    while (($#)); do
        case "$1" in
            --delay) delay=$2; shift 2 ;;
            *) echo "lab.sh up: unknown $1" >&2; exit 2 ;;
        esac
    done
    down quiet
    ip netns add "$(ns lan)"
    ip -n "$(ns lan)" link add lan type bridge
    # The LAN forwards at once (no STP listening delay) and learns from every frame.
    ip -n "$(ns lan)" link set lan type bridge stp_state 0 forward_delay 0
    ip -n "$(ns lan)" link set lan up
    local netem=yes
    for h in "${hosts[@]}"; do
        ip netns add "$(ns "$h")"
        ip -n "$(ns "$h")" link set lo up
        ip link add "$lab-$h" netns "$(ns lan)" type veth peer name eth0 netns "$(ns "$h")"
        ip -n "$(ns lan)" link set "$lab-$h" master lan up
        if [[ $netem == yes && $delay != 0 ]]; then
            if ! tc -n "$(ns "$h")" qdisc add dev eth0 root netem delay "${delay}ms" 2>/dev/null; then
                netem=no
                echo "lab.sh: this kernel has no netem qdisc: links are not delayed" >&2
            fi
        fi
        local dev=eth0
        if [[ " ${vm_hosts[*]} " == *" $h "* ]]; then
            ip -n "$(ns "$h")" link add br0 type bridge
            ip -n "$(ns "$h")" link set br0 type bridge stp_state 0 forward_delay 0
            ip -n "$(ns "$h")" link set eth0 master br0
            ip -n "$(ns "$h")" tuntap add vm0 mode tap
            ip -n "$(ns "$h")" link set vm0 master br0 up
            ip -n "$(ns "$h")" link set br0 up
            dev=br0
        fi
        ip -n "$(ns "$h")" link set eth0 up
        ip -n "$(ns "$h")" addr add "$(addr_of "$h")/24" dev "$dev"
    done
    echo "lab.sh: hosts ${hosts[*]} up on 10.77.0.0/24 (namespaces $lab-*)"
}

down() {
    for n in $(ip netns list | awk '{print $1}'); do
        if [[ $n == "$lab-"* ]]; then
            ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            ip netns del "$n"
        fi
    done
    [[ ${1:-} == quiet ]] || echo "lab.sh: down"
}

# Cutting: a host's uplink down (from everything), or blackhole routes both ways (from one
# peer only: both still reach the others).
cut() {
    if (($# == 1)); then
        ip -n "$(ns lan)" link set "$lab-$1" down
    else
        ip -n "$(ns "$1")" route add blackhole "$(addr_of "$2")/32"
        ip -n "$(ns "$2")" route add blackhole "$(addr_of "$1")/32"
    fi
}

heal() {
    if (($# == 1)); then
        ip -n "$(ns lan)" link set "$lab-$1" up
    else
        ip -n "$(ns "$1")" route del blackhole "$(addr_of "$2")/32" || true
        ip -n "$(ns "$2")" route del blackhole "$(addr_of "$1")/32" || true
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    up) up "$@" ;;
    down) down ;;
    exec) h=$1; shift; addr_of "$h" >/dev/null; exec ip netns exec "$(ns "$h")" "$@" ;;
    addr) addr_of "$1" ;;
    cut) cut "$@" ;;
    heal) heal "$@" ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
esac
