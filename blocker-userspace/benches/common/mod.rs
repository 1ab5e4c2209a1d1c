//! What the benches share: the benchmark's own eBPF object.

use std::path::Path;

use aya::{Ebpf, EbpfLoader};

/// The benchmark's programs and maps (blocker-ebpf/src/bench.rs), built by build.rs
/// beside the daemon's object; only the benches embed it.
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/blocker-bench"));

/// Loads the benchmark's object with the maps pinned in `dir`: loaded with an
/// interface's pin directory, its programs share that interface's counters, mode
/// and list names with the daemon's program. Its programs are loaded on first use.
pub(crate) fn load_bench_object(dir: &Path) -> Ebpf {
    std::fs::create_dir_all(dir).unwrap();
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(dir).override_global("AYA_LOG_LEVEL", &0u8, false);
    loader.load(BENCH_OBJECT).expect("the benchmark's eBPF object loads")
}
