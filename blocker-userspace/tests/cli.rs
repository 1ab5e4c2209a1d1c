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

/// Every reading command answers in JSON with its typed report.
#[test]
fn reading_commands_answer_in_json() {
    use blocker::control::report::{ConfigRefusal, ConfigReport, LookupReport, RegionDetail, RegionsList};
    let json = |args: &[&str]| {
        let out = blocker(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let list: RegionsList = serde_json::from_slice(&json(&["regions", "list", "--json"])).unwrap();
    assert_eq!(list.regions.len(), 237);
    assert!(list.sources[0].name.contains("country-ip-blocks") && list.sources[0].date.is_some());
    let de = list.regions.iter().find(|r| r.code == "DE").unwrap();
    assert_eq!(de.name.as_deref(), Some("Germany"));
    assert!(de.ipv4_prefixes > 1000 && de.ipv6_prefixes > 1000, "{de:?}");

    let li: RegionDetail = serde_json::from_slice(&json(&["regions", "show", "LI", "--json"])).unwrap();
    assert_eq!((li.summary.code.as_str(), li.summary.name.as_deref()), ("LI", Some("Liechtenstein")));
    assert_eq!(li.prefixes.len(), li.summary.ipv4_prefixes + li.summary.ipv6_prefixes);

    let args = ["lookup", "127.0.0.1", "1.2.3.4", "--deny-country", "CN", "--pin-root", "/nonexistent", "--json"];
    let lookup: LookupReport = serde_json::from_slice(&json(&args)).unwrap();
    assert_eq!(lookup.addresses.len(), 2);
    let lo = &lookup.addresses[0];
    assert_eq!(lo.address.to_string(), "127.0.0.1");
    assert_eq!(lo.policy.len(), 1, "one scope, for all traffic");
    let policy = &lo.policy[0];
    assert_eq!((policy.scope.as_str(), policy.ports.as_str()), ("default", "all traffic"));
    assert_eq!((policy.verdict.list.as_deref(), policy.verdict.action.as_str()), (Some("never-block"), "allow"));
    assert!(lo.live.is_empty(), "no daemon: no live verdicts");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/blocker.toml");
    let cache = std::env::temp_dir().join(format!("blocker-json-cache-{}", std::process::id()));
    let text = std::fs::read_to_string(example).unwrap().replace("/var/lib/blocker/cache", cache.to_str().unwrap());
    let copy = std::env::temp_dir().join(format!("blocker-json-{}.toml", std::process::id()));
    std::fs::write(&copy, text).unwrap();
    let report: ConfigReport =
        serde_json::from_slice(&json(&["check-config", "--config", copy.to_str().unwrap(), "--json"])).unwrap();
    assert!(report.valid && report.error.is_none(), "{report:?}");
    assert_eq!(report.interfaces.len(), 2);
    assert_eq!((report.metrics_listen.as_deref(), report.events_per_second), (Some("127.0.0.1:9187"), 100));
    assert!(report.lists.iter().any(|l| l.name == "country:CN" && l.action == "drop"), "{:?}", report.lists);
    assert!(report.table.classifier_bytes > 0 && report.table.budget_bytes == 256 << 20);
    // A refused file: the refusal, in JSON too, and a failing exit status.
    std::fs::write(&copy, "[[interface]]\nname = \"eth0\"\nbogus = 1\n").unwrap();
    let out = blocker(&["check-config", "--config", copy.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let refusal: ConfigRefusal = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!refusal.valid && refusal.error.contains("unknown field `bogus`"), "{refusal:?}");
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_dir_all(&cache);
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
