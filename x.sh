#!/usr/bin/env bash
# Quick start: `./x.sh demo` (capture fake VMs' traffic on a built-in lab) and `./x.sh test` (all tests).
# Installs what is missing first (pinned Rust, rust-src, llvm-22-dev, bpf-linker, tshark, ...):
# safe to run again, it only installs what is not there. Needs root: it creates network namespaces.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
    echo "x.sh: run as root (sudo ./x.sh $*): the lab and the tests create network namespaces" >&2
    exit 1
fi
bash scripts/bootstrap.sh
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
exec cargo xtask "$@"
