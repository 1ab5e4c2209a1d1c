use which::which;

/// Rebuild when bpf-linker changes, and fail early with a useful message without it.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!("bpf-linker not found: run `cargo xtask setup` (installs bpf-linker@0.10.1)"),
    }
}
