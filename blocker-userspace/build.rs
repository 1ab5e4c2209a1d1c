use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// Compiles blocker-ebpf with the nightly toolchain and bpf-linker; the object lands
/// in OUT_DIR and is embedded into the `blocker` binary.
fn main() -> anyhow::Result<()> {
    let root = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir =
        std::path::Path::new(&root).parent().ok_or_else(|| anyhow!("no workspace root"))?.join("blocker-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-changed={ebpf_dir}/../blocker-common/src");
    aya_build::build_ebpf(
        [Package { name: "blocker-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
