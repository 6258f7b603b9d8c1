#!/usr/bin/env bash
# Installs everything capture-daemon needs to build and test on a fresh Debian 12 machine of this kind:
# the pinned Rust toolchain (+ rust-src), llvm-22-dev, bpf-linker, and the packages the tests and the lab use.
# Idempotent: each step checks first, so a second run takes seconds.
set -euo pipefail

RUST_VERSION=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
BPF_LINKER_VERSION=0.13.0
# tcpdump, netsniff-ng (also trafgen), valgrind and wireshark-common (dumpcap, capinfos) are what
# `cargo xtask bench` compares against and measures with; util-linux has taskset; systemd has systemd-analyze (the unit file test).
APT_PACKAGES=(llvm-22-dev iproute2 ethtool tshark wireshark-common tcpdump procps netsniff-ng
    valgrind util-linux systemd)

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs packages; the lab and the tests create network namespaces)"
    exit 1
fi

export PATH="$HOME/.cargo/bin:$PATH"

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer it non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v rustup >/dev/null; then
    say "rustup not found: this machine kind ships it; install rustup first"
    exit 1
fi
if ! rustup toolchain list | grep -q "^${RUST_VERSION}-"; then
    say "installing Rust ${RUST_VERSION} (pinned in rust-toolchain.toml)"
    rustup toolchain install "${RUST_VERSION}" --profile minimal --component rust-src,clippy,rustfmt
elif ! rustup component list --toolchain "${RUST_VERSION}" --installed | grep -q '^rust-src'; then
    rustup component add --toolchain "${RUST_VERSION}" rust-src
fi

if ! bpf-linker --version 2>/dev/null | grep -q "${BPF_LINKER_VERSION}"; then
    say "installing bpf-linker ${BPF_LINKER_VERSION} against LLVM 22 (about 80 s)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo +"${RUST_VERSION}" install --locked bpf-linker \
        --version "${BPF_LINKER_VERSION}" --no-default-features --features llvm-22
fi
say "ready: rustc ${RUST_VERSION}, bpf-linker ${BPF_LINKER_VERSION}, LLVM 22, tshark, tcpdump, netsniff-ng, valgrind"
