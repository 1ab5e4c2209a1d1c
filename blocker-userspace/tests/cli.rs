//! The `blocker` binary's command line, run as a user would (no kernel needed).
//! Having an integration test here also makes `cargo test` build the binary that
//! the network-namespace tests start.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

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

/// What `run` refuses, `check-config` refuses too: a pin root off any bpffs, a
/// file at the socket path that is not a socket, a control character in an
/// interface name.
#[test]
fn check_config_refuses_what_run_refuses() {
    let dir = std::env::temp_dir().join(format!("blocker-agree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_socket = dir.join("plain-file");
    std::fs::write(&not_a_socket, "keep me").unwrap();
    let config = dir.join("c.toml");
    let cases = [
        ("pin_root = \"/tmp/not-bpffs\"", "eth0", "is not on a bpffs"),
        (&*format!("socket = \"{}\"", not_a_socket.display()), "eth0", "exists and is not a socket"),
        ("", "eth0\\u0000x", "not a possible interface name"),
    ];
    for (daemon_key, iface, expected) in cases {
        let text = format!(
            "[daemon]\n{daemon_key}\ncache_dir = \"{}\"\n[[interface]]\nname = \"{iface}\"\n[policy]\nnever_block = [\"192.0.2.0/24\"]\n",
            dir.join("cache").display()
        );
        std::fs::write(&config, text).unwrap();
        let out = blocker(&["check-config", "--config", config.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expected), "{daemon_key} {iface}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&not_a_socket).unwrap(), "keep me");
    // Options beside a config file would be ignored: refused by name.
    let out = blocker(&["run", "--config", config.to_str().unwrap(), "--xdp-mode", "native", "--deny", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--deny, --xdp-mode given with a config file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
