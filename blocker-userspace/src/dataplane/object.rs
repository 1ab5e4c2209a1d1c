//! The XDP object: loading it with its maps pinned under an interface's directory
//! and the classifier maps sized to the table.

use std::path::{Path, PathBuf};

use aya::{
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfError, EbpfLoader,
};
use blocker_common::{
    classifier::{pieces, Shape},
    map_names, EGRESS_PROGRAM_NAME, PROGRAM_NAME,
};

/// The XDP object built from blocker-ebpf by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/blocker"));

/// Why the XDP program cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(
        "blocker needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, to load XDP programs \
         and use pinned maps: run it with sudo"
    )]
    Privileges,
    #[error("cannot create {path}: {error}")]
    CreateDir { path: PathBuf, error: std::io::Error },
    #[error("classifier map {map}: {blocks} blocks is too many")]
    TooManyBlocks { map: &'static str, blocks: usize },
    #[error("loading the blocker eBPF object: {error}")]
    Load { error: Box<EbpfError> },
    #[error("the kernel refused the XDP program: {error}")]
    Refused { error: Box<ProgramError> },
    #[error("the kernel refused the tc egress program (outbound lists): {error}")]
    EgressRefused { error: Box<ProgramError> },
    #[error("the eBPF object has no XDP program {PROGRAM_NAME}: the build is broken")]
    NoProgram,
    #[error("the eBPF object has no tc program {EGRESS_PROGRAM_NAME}: the build is broken")]
    NoEgressProgram,
}

/// The object with its BTF as the kernel accepts it (`super::btf`), made once,
/// 8-byte aligned like the embedded one (the ELF parser reads it in place).
fn kernel_object() -> &'static [u8] {
    static OBJECT: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    let words = OBJECT.get_or_init(|| {
        let fixed = super::btf::with_identifier_names(EBPF_OBJECT);
        let mut words = vec![0u64; fixed.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..fixed.len()].copy_from_slice(&fixed);
        words
    });
    &bytemuck::cast_slice(words)[..EBPF_OBJECT.len()]
}

/// aya-log's ring buffer.
const EBPF_LOG_MAP: &str = "AYA_LOGS";

/// Refuses early, with what to do, when the process lacks the capabilities.
pub fn check_privileges() -> Result<(), ObjectError> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON; the verifier allows the
    // program's packet pointer arithmetic only with CAP_PERFMON.
    if !(has(CAP_NET_ADMIN) && (has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)))) {
        return Err(ObjectError::Privileges);
    }
    Ok(())
}

/// Loads the XDP program with its shared maps pinned under `dir` (reusing maps
/// already pinned there), its classifier maps created at `table_blocks` blocks
/// each (`map_names::CLASSIFIER` order), and the table's shape, and the port map of a table with scopes
/// (`blocker_common::scope`; the program reads it then). With `outbound` (the
/// index of the outbound table) the tc egress program is loaded too, over the
/// same maps. `ebpf_log_level` 0 compiles every aya-log statement out.
pub fn load(
    dir: &Path,
    ebpf_log_level: u8,
    table_blocks: &[usize; 7],
    shape: Shape,
    port_map: Option<&blocker_common::scope::PortMap>,
    outbound: Option<u32>,
) -> Result<Ebpf, ObjectError> {
    std::fs::create_dir_all(dir).map_err(|error| ObjectError::CreateDir { path: dir.to_owned(), error })?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(dir).override_global("AYA_LOG_LEVEL", &ebpf_log_level, false);
    // Every program instance of the interface logs into the same ring buffer.
    let log_pin = dir.join(EBPF_LOG_MAP);
    loader.map_pin_path(EBPF_LOG_MAP, log_pin.as_path());
    loader.override_global(map_names::V4_DIR_BITS, &shape.v4_bits, true);
    loader.override_global(map_names::V6_DIR_BITS, &shape.v6_bits, true);
    let scoped_flag = u32::from(port_map.is_some());
    loader.override_global(map_names::SCOPED, &scoped_flag, true);
    if let Some(map) = port_map {
        loader.override_global(map_names::PORT_MAP, map, true);
    }
    let outbound_scope = outbound.unwrap_or(0);
    loader.override_global(map_names::OUTBOUND_SCOPE, &outbound_scope, true);
    for (&map, &blocks) in map_names::CLASSIFIER.iter().zip(table_blocks) {
        // The map holds the table in pieces (`blocker_common::classifier::Piece`).
        let n = u32::try_from(pieces(blocks)).map_err(|_| ObjectError::TooManyBlocks { map, blocks })?;
        loader.map_max_entries(map, n);
    }
    let mut ebpf = loader.load(kernel_object()).map_err(|error| ObjectError::Load { error: Box::new(error) })?;
    let prog = program_mut(&mut ebpf)?;
    prog.load().map_err(|error| ObjectError::Refused { error: Box::new(error) })?;
    if outbound.is_some() {
        let egress: &mut SchedClassifier = ebpf
            .program_mut(EGRESS_PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .ok_or(ObjectError::NoEgressProgram)?;
        egress.load().map_err(|error| ObjectError::EgressRefused { error: Box::new(error) })?;
    }
    Ok(ebpf)
}

/// The object's tc egress program, if it was loaded (the table has outbound lists).
pub fn egress_program_mut(ebpf: &mut Ebpf) -> Option<&mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf.program_mut(EGRESS_PROGRAM_NAME).and_then(|p| p.try_into().ok())?;
    prog.fd().is_ok().then_some(prog)
}

/// The object's XDP program.
pub fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, ObjectError> {
    ebpf.program_mut(PROGRAM_NAME).and_then(|p| p.try_into().ok()).ok_or(ObjectError::NoProgram)
}
