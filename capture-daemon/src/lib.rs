//! capture-daemon: capture chosen VMs' frames on a hypervisor NIC into rotating pcapng files.
//!
//! The data path, in the order a frame travels it:
//!
//! 1. `capture-ebpf` (in the kernel) matches the frame against the targets and slices it. In
//!    tap mode (the default) tcx ingress and egress programs copy it into this CPU's BPF ring
//!    buffer and let it go on; in mirror mode XDP redirects it to the AF_XDP socket of its RX
//!    queue. [`bpf`] loads, attaches and feeds the programs.
//! 2. [`source`]: [`source::ring`] (one reader per interface) or [`source::afxdp`] (one worker
//!    per RX queue) copies each frame into a [`handoff`] queue (lock-free, single producer /
//!    single consumer, no allocation) through the same [`source::Feed`].
//! 3. [`writer`]: one writer thread merges the queues in time order and writes pcapng records
//!    into large buffers, rotating and pruning files as [`config`] says.
//!
//! [`daemon`] wires these together; `main.rs` is only the command line, and [`commands`] holds
//! the commands other than `run` (`check`, `status`, the one-shot `capture`).

pub mod bpf;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod handoff;
pub mod libvirt;
pub mod logging;
pub mod metrics;
pub mod nap;
pub mod netdev;
pub mod nic;
pub mod notify;
pub mod source;
pub mod stop;
pub mod sys;
pub mod watch;
pub mod writer;
