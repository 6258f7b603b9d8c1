//! Builds the XDP program (`capture-ebpf`) for the BPF target and leaves the object in OUT_DIR,
//! where `src/bpf.rs` embeds it with `include_bytes_aligned!`.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The eBPF build uses the same pinned toolchain as everything else: its LLVM (22) is the one
/// bpf-linker was built against. Never "nightly": a newer LLVM breaks the link ("Invalid record").
const EBPF_TOOLCHAIN: &str = "1.98.0";

fn main() -> anyhow::Result<()> {
    let metadata =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "capture-ebpf")
        .ok_or_else(|| anyhow!("capture-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("capture-ebpf manifest has no parent directory"))?;
    // Stable rustc + rust-src builds `core` for bpfel only with -Z build-std, which needs
    // RUSTC_BOOTSTRAP. Set here, it reaches the inner eBPF cargo build and nothing else.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    // capture-common is shared with the eBPF crate: a change there must rebuild the object too.
    println!("cargo::rerun-if-changed=../capture-common/src");
    aya_build::build_ebpf(
        [Package { name: "capture-ebpf", root_dir: root_dir.as_str(), ..Default::default() }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
