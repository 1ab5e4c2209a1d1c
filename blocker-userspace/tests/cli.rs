//! The `blocker` binary's command line, run as a user would (no kernel needed).
//! Having an integration test here also makes `cargo test` build the binary that
//! the network-namespace tests start.

use std::process::Command;

fn blocker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blocker")).args(args).output().unwrap()
}

#[test]
fn help_lists_the_commands() {
    let out = blocker(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "stats", "detach", "lookup", "regions"] {
        assert!(text.contains(cmd), "{cmd} missing from --help:\n{text}");
    }
}

#[test]
fn bad_arguments_are_explained_without_a_panic() {
    let out = blocker(&["run", "--iface", "x", "--xdp-mode", "turbo"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'turbo'") && !err.contains("panicked"), "{err}");
    let out = blocker(&["regions", "show", "zz"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("blocker: error: unknown country code \"zz\""), "{err}");
}

#[test]
fn lookup_without_a_daemon_answers_from_the_policy() {
    let out = blocker(&["lookup", "127.0.0.1", "--deny-country", "CN", "--pin-root", "/nonexistent"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("policy: list never-block -> allow"), "{text}");
}

/// The shipped example config passes `check-config` as it is (its own lists are
/// `optional:` until the operator has them).
#[test]
fn shipped_example_config_passes_check_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/blocker.toml");
    let cache = std::env::temp_dir().join(format!("blocker-example-cache-{}", std::process::id()));
    let text = std::fs::read_to_string(example).unwrap().replace("/var/lib/blocker/cache", cache.to_str().unwrap());
    let copy = std::env::temp_dir().join(format!("blocker-example-{}.toml", std::process::id()));
    std::fs::write(&copy, text).unwrap();
    let out = blocker(&["check-config", "--config", copy.to_str().unwrap()]);
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_dir_all(&cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"), "{}", String::from_utf8_lossy(&out.stdout));
}
