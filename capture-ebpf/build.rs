use which::which;

/// Rebuild the eBPF object when bpf-linker changes (cargo cannot see that dependency otherwise).
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH: run scripts/bootstrap.sh (installs bpf-linker 0.13.0 for LLVM 22)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
