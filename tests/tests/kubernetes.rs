//! The Kubernetes base (dist/kubernetes) as an operator applies it: rendered
//! by kubectl's kustomize, valid against the Kubernetes schemas
//! (`kubernetes-validate --strict`), with the DaemonSet's promises kept
//! (hostNetwork, three capabilities and not privileged, the node's bpffs with
//! its propagation, a readiness probe on the metrics endpoint the config
//! serves), and its config accepted by `blocker check-config` once the
//! Secret's files are there.
#![allow(unused_crate_dependencies)]

use std::{path::Path, process::Command};

use blocker_tests::daemon::blocker_cli;

fn base() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/kubernetes")
}

fn run(program: &str, args: &[&str]) -> String {
    let out =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e} (setup installs it)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_kustomize_base_renders_validates_and_keeps_its_promises() {
    let tmp = tempfile::tempdir().unwrap();
    let rendered = run("kubectl", &["kustomize", base().to_str().unwrap()]);
    let file = tmp.path().join("blocker.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let said = run("kubernetes-validate", &["--strict", file.to_str().unwrap()]);
    for kind in ["namespace/blocker", "serviceaccount/blocker", "secret/blocker-fleet", "daemonset/blocker"] {
        assert!(said.contains(&format!("passed for resource {kind}")), "{said}");
    }
    assert!(said.contains("passed for resource configmap/blocker-config-"), "{said}");

    let has = |line: &str| rendered.lines().any(|l| l.trim() == line);
    for line in [
        "hostNetwork: true",
        "privileged: false",
        "allowPrivilegeEscalation: false",
        "mountPropagation: HostToContainer",
        "path: /sys/fs/bpf",
        "automountServiceAccountToken: false",
    ] {
        assert!(has(line), "{line} in {rendered}");
    }
    // Exactly three capabilities are added, after dropping all.
    let caps = rendered.split("add:\n").nth(1).unwrap();
    let added: Vec<&str> = caps
        .lines()
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim().trim_start_matches("- "))
        .collect();
    assert_eq!(added, ["BPF", "NET_ADMIN", "PERFMON"]);
    assert!(caps.contains("drop:\n            - ALL"), "{caps}");
    // The readiness probe asks the endpoint the config serves.
    let probe = rendered.split("readinessProbe:").nth(1).unwrap();
    let probe: String = probe.lines().take(8).collect::<Vec<_>>().join("\n");
    assert!(
        probe.contains("path: /metrics") && probe.contains("port: 9187") && probe.contains("host: 127.0.0.1"),
        "{probe}"
    );

    // The ConfigMap's config, with the Secret's files in place, is one
    // `blocker run` takes: check-config accepts it.
    let config = std::fs::read_to_string(base().join("blocker.toml")).unwrap();
    assert!(config.contains("metrics_listen = \"127.0.0.1:9187\""));
    let secret = tmp.path().join("fleet");
    std::fs::create_dir(&secret).unwrap();
    let s = |name: &str| secret.join(name).display().to_string();
    let out =
        blocker_cli(&["fleet", "keygen", "--secret-key", &s("fleet.key"), "--public-key", &s("fleet.pub")]).unwrap();
    assert!(out.status.success());
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=etcd-ca",
            "-keyout",
            &s("etcd-ca.key"),
            "-out",
            &s("etcd-ca.crt"),
        ],
    );
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=blocker",
            "-keyout",
            &s("etcd-client.key"),
            "-out",
            &s("etcd-client.crt"),
        ],
    );
    let local = tmp.path().join("blocker.toml");
    std::fs::write(
        &local,
        config
            .replace("/etc/blocker/fleet/", &format!("{}/", secret.display()))
            .replace("/var/lib/blocker", &tmp.path().join("state").display().to_string()),
    )
    .unwrap();
    let out = blocker_cli(&["check-config", "--config", local.to_str().unwrap()]).unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("fleet: edge (group default") && text.contains("the policy is the fleet's bundle"), "{text}");

    // Without the Secret's files, the start is refused, naming the key and the file.
    std::fs::remove_file(secret.join("fleet.pub")).unwrap();
    let out = blocker_cli(&["check-config", "--config", local.to_str().unwrap()]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("fleet.public_key") && err.contains("fleet.pub"), "{err}");
}
