#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs the system packages the tests need
# (when missing), then runs formatting, lint and every test. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# cmake: Berkeley SoftFloat's build, the reference ftvm-fpu's differential tests compare against
# (a dev-dependency: ftvm itself builds with cargo alone). binutils/gcc-riscv64: the bare-metal ISA test programs.
# qemu-system-misc: the reference machine for the differential tests and benchmarks.
# device-tree-compiler, e2fsprogs, xz-utils, cpio: image building and checks.
# redis-tools: the host-side redis-cli and redis-benchmark the redis guest is tested with.
# etcd-server: the FT tie-breaker's etcd backend (tests start private servers on free ports).
# chromium: the status page's test loads it headless and checks the DOM it builds.
# qemu-utils (qemu-nbd), nbdkit: NBD servers the shared-disk client is tested against.
packages=(cmake qemu-system-misc binutils-riscv64-linux-gnu gcc-riscv64-linux-gnu
          device-tree-compiler e2fsprogs xz-utils cpio ca-certificates debian-archive-keyring
          redis-tools etcd-server chromium qemu-utils nbdkit)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "test.sh: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q
    install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@"; }
    if ! install "${missing[@]}"; then
        # Some machines come with a newer qemu-utils (a backport) than the archive's
        # qemu-system-misc, which it Breaks: take both at the version the archive has.
        archive=$(apt-cache madison qemu-utils | awk -F'|' 'NR == 1 { gsub(/ /, "", $2); print $2 }')
        echo "test.sh: retrying with qemu-utils at the archive's version ($archive)"
        install --allow-downgrades "${missing[@]}" "qemu-utils=$archive"
    fi
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace 2>&1
