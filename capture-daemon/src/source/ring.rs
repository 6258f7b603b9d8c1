//! Tap mode: per-CPU BPF ring buffers filled by the tcx programs (see the module docs of `source`).
