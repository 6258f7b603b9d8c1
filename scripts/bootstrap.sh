#!/usr/bin/env bash
# Installs everything capture-daemon needs to build and test on a fresh Debian 12 machine of this kind:
# the pinned Rust toolchain (+ rust-src), llvm-22-dev, bpf-linker, and the packages the tests and the lab use.
# Idempotent: each step checks first, so a second run takes seconds.
# It installs and nothing else: no network namespace or mount is touched, whatever host it runs on.
# Leftovers of interrupted test, demo or bench runs are removed by those commands (cargo xtask).
set -euo pipefail

RUST_VERSION=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
BPF_LINKER_VERSION=0.13.0
# tcpdump, netsniff-ng (also trafgen), valgrind and wireshark-common (dumpcap, capinfos) are what
# `cargo xtask bench` compares against and measures with; util-linux has taskset; systemd has systemd-analyze (the unit file test);
# bpftool shows the tests which programs are attached (tcx links); iputils-ping is the demo's and the tests' ping.
# gcc and libc6-dev: Rust links through `cc`; curl and ca-certificates: installing rustup.
# linux-perf: `cargo xtask bench --perf` profiles (Debian 12's perf 6.1 records fine on newer kernels).
APT_PACKAGES=(llvm-22-dev gcc libc6-dev curl ca-certificates iproute2 ethtool tshark
    wireshark-common tcpdump procps netsniff-ng valgrind util-linux systemd bpftool iputils-ping
    linux-perf libvirt-dev libvirt-clients)

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs packages; the lab and the tests create network namespaces)"
    exit 1
fi

# A CI agent running as a system service may have no HOME.
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

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
    say "installing rustup (no default toolchain: the pinned one follows)"
    curl --proto '=https' --tlsv1.2 --retry 5 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain none --no-modify-path
fi
# Output is read into variables first: `| grep -q` could stop reading early and make the
# producer fail on a closed pipe, which pipefail would report as "missing".
toolchains=$(rustup toolchain list)
if ! grep -q "^${RUST_VERSION}-" <<<"$toolchains"; then
    say "installing Rust ${RUST_VERSION} (pinned in rust-toolchain.toml)"
    rustup toolchain install "${RUST_VERSION}" --profile minimal --component rust-src,clippy,rustfmt
fi
components=$(rustup component list --toolchain "${RUST_VERSION}" --installed)
for c in rust-src clippy rustfmt; do
    if ! grep -q "^${c}" <<<"$components"; then
        rustup component add --toolchain "${RUST_VERSION}" "$c"
    fi
done

# The version alone is not enough: a bpf-linker built with its default LLVM (23) links eBPF
# objects that rustc 1.98 (LLVM 22) cannot read ("Invalid record").
linker_ok() {
    local version libs
    version=$(bpf-linker --version 2>/dev/null) || return 1
    libs=$(ldd "$(command -v bpf-linker)" 2>/dev/null) || return 1
    grep -q "${BPF_LINKER_VERSION}" <<<"$version" && grep -q 'libLLVM.so.22' <<<"$libs"
}
if ! linker_ok; then
    say "installing bpf-linker ${BPF_LINKER_VERSION} against LLVM 22 (about 80 s)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo +"${RUST_VERSION}" install --locked --force bpf-linker \
        --version "${BPF_LINKER_VERSION}" --no-default-features --features llvm-22
fi

say "ready: rustc ${RUST_VERSION}, bpf-linker ${BPF_LINKER_VERSION}, LLVM 22, tshark, tcpdump, netsniff-ng, valgrind"
