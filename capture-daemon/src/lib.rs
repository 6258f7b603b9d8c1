//! capture-daemon: capture chosen VMs' frames on a hypervisor NIC into rotating pcapng files.
//!
//! The data path, in the order a frame travels it:
//!
//! 1. `capture-ebpf` (XDP, in the kernel) matches the frame against the targets, slices it and
//!    redirects it to the AF_XDP socket of its RX queue. [`bpf`] loads, attaches and feeds it.
//! 2. [`xsk`]: one worker thread per RX queue drains its AF_XDP ring in batches and copies each
//!    frame into a [`handoff`] queue (lock-free, single producer / single consumer, no allocation).
//! 3. [`writer`]: one writer thread takes frames from every queue and writes pcapng records into
//!    large buffers, rotating and pruning files as [`config`] says.
//!
//! [`daemon`] wires these together; `main.rs` is only the command line.

pub mod bpf;
pub mod check;
pub mod config;
pub mod daemon;
pub mod handoff;
pub mod metrics;
pub mod nap;
pub mod netdev;
pub mod notify;
pub mod oneshot;
pub mod status;
pub mod stop;
pub mod sys;
pub mod watch;
pub mod source;
pub mod writer;

