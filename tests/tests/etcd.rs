//! blocker's etcd client (etcd's JSON gateway) against a real three-member
//! cluster of Debian's etcd 3.4 on loopback: reads and writes through any
//! member, compare-and-put, leases that expire, a watch that resumes from the
//! last revision it saw, a re-list after compaction, a member killed, and
//! every member down.
#![allow(unused_crate_dependencies)]

use std::time::Duration;

use blocker::fleet::etcd::{Etcd, EtcdError, Event};
use blocker_tests::{etcd::Cluster, wait_until};

fn client(endpoints: &str) -> Etcd {
    let list: Vec<String> = endpoints.split(',').map(String::from).collect();
    Etcd::new(&list, Duration::from_secs(5), Duration::from_secs(3)).unwrap()
}

#[test]
fn the_client_reads_writes_watches_and_survives_members_going_away() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(tmp.path()).unwrap();
    let etcd = client(&cluster.endpoints());

    // Writes through one member are read through another.
    let rev = etcd.put("blocker/edge/a", b"one", None).unwrap();
    let other = client(&cluster.endpoint(2));
    let (kv, _) = other.get("blocker/edge/a").unwrap();
    let kv = kv.unwrap();
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"one"[..], rev));
    assert_eq!(other.get("blocker/edge/none").unwrap().0, None);

    // Compare-and-put: only against the revision read.
    assert!(!etcd.put_if("blocker/edge/a", b"two", rev - 1).unwrap());
    assert!(etcd.put_if("blocker/edge/a", b"two", rev).unwrap());
    assert!(etcd.put_if("blocker/edge/new", b"x", 0).unwrap());
    assert!(!etcd.put_if("blocker/edge/new", b"y", 0).unwrap(), "0: the key must not exist");
    let (all, listed_at) = etcd.range_prefix("blocker/edge/").unwrap();
    let keys: Vec<&str> = all.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["blocker/edge/a", "blocker/edge/new"]);

    // A lease: the key lives while it is kept alive, and goes when it expires.
    let lease = etcd.grant(2).unwrap();
    etcd.put("blocker/edge/hosts/h1", b"alive", Some(lease)).unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(900));
        assert!(etcd.keepalive(lease).unwrap() > 0);
    }
    assert!(etcd.get("blocker/edge/hosts/h1").unwrap().0.is_some(), "kept alive");
    assert!(wait_until(Duration::from_secs(8), || etcd.get("blocker/edge/hosts/h1").unwrap().0.is_none()));
    assert_eq!(etcd.keepalive(lease).unwrap(), 0, "an expired lease says so");

    // A watch from the listing's revision + 1 sees what came after, in order.
    let later = etcd.put("blocker/edge/b", b"three", None).unwrap();
    let mut seen = Vec::new();
    let last = etcd
        .watch("blocker/edge/", listed_at + 1, |events, _| {
            seen.extend(events);
            !seen.iter().any(|e| matches!(e, Event::Put(kv) if kv.key == "blocker/edge/b"))
        })
        .unwrap();
    assert_eq!(last, later);
    assert!(seen.iter().any(|e| matches!(e, Event::Delete { key, .. } if key == "blocker/edge/hosts/h1")), "{seen:?}");
    // Resumed from the last revision + 1: nothing is seen twice; a new put comes.
    let next = etcd.put("blocker/edge/c", b"four", None).unwrap();
    let mut again = Vec::new();
    etcd.watch("blocker/edge/", last + 1, |events, _| {
        again.extend(events);
        false
    })
    .unwrap();
    assert!(
        matches!(&again[..], [Event::Put(kv)] if kv.key == "blocker/edge/c" && kv.mod_revision == next),
        "{again:?}"
    );
    // The stream ends by itself when nothing comes (the watch time), resumable.
    let started = std::time::Instant::now();
    assert_eq!(etcd.watch("blocker/edge/", next + 1, |_, _| true).unwrap(), next);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Compacted past the resume point: the watch says so, and a re-list then
    // a watch from its revision + 1 carry on.
    let compacted = etcd.put("blocker/edge/c2", b"4b", None).unwrap();
    cluster.compact(compacted).unwrap();
    match etcd.watch("blocker/edge/", last + 1, |_, _| true) {
        Err(EtcdError::Compacted { compact_revision }) => assert_eq!(compact_revision, compacted),
        other => panic!("{other:?}"),
    }
    let (relisted, at) = etcd.range_prefix("blocker/edge/").unwrap();
    assert_eq!(relisted.len(), 5);
    let newest = etcd.put("blocker/edge/d", b"five", None).unwrap();
    let mut after = Vec::new();
    etcd.watch("blocker/edge/", at + 1, |e, _| {
        after.extend(e);
        false
    })
    .unwrap();
    assert!(matches!(&after[..], [Event::Put(kv)] if kv.mod_revision == newest), "{after:?}");

    // One member killed: the client goes on through the others.
    cluster.kill_member(0);
    etcd.put("blocker/edge/e", b"six", None).unwrap();
    assert_eq!(etcd.get("blocker/edge/e").unwrap().0.unwrap().value, b"six");
    // Every member killed: an error that names the endpoints, at once.
    cluster.kill_member(1);
    cluster.kill_member(2);
    let started = std::time::Instant::now();
    let e = etcd.get("blocker/edge/e").unwrap_err();
    assert!(matches!(&e, EtcdError::Unreachable { endpoints, .. } if endpoints.contains("127.0.0.1")), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // Back: the same client works again.
    for i in 0..3 {
        cluster.start_member(i).unwrap();
    }
    assert!(wait_until(Duration::from_secs(20), || etcd.get("blocker/edge/e").is_ok()));
    assert_eq!(etcd.get("blocker/edge/e").unwrap().0.unwrap().value, b"six", "nothing was lost");
}

/// The publisher's side, through the CLI, against the real cluster: publish,
/// a staged rollout (canary first, then promote), a signed rollback, a
/// refused config that takes no revision, status with a host's state, and
/// etcd down.
#[test]
fn publish_promote_rollback_and_status() {
    use blocker::fleet::{bundle, sign::PublicKey, store};
    use blocker_tests::daemon::blocker_cli;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("etcd")).unwrap();
    let mut cluster = Cluster::start(&dir.join("etcd")).unwrap();
    let endpoints = cluster.endpoints();
    let path = |name: &str| dir.join(name).display().to_string();
    let cli = |args: &[&str]| {
        let out = blocker_cli(args).unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) =
        cli(&["fleet", "keygen", "--secret-key", &path("fleet.key"), "--public-key", &path("fleet.pub")]);
    assert!(ok, "{err}");
    std::fs::write(dir.join("attackers.txt"), "198.51.100.0/24\n").unwrap();
    std::fs::write(dir.join("fleet.toml"), format!("[policy]\ndeny = [\"{}\"]\n", path("attackers.txt"))).unwrap();
    let publish = |group: Option<&str>| {
        let mut args = vec!["fleet", "publish", "--etcd", &endpoints, "--fleet", "edge"];
        let (config, key) = (path("fleet.toml"), path("fleet.key"));
        args.extend(["--config", &config, "--secret-key", &key]);
        if let Some(g) = group {
            args.extend(["--group", g]);
        }
        cli(&args)
    };
    let (ok, out, err) = publish(None);
    assert!(ok && out.contains("fleet edge revision 1") && out.contains("groups default"), "{out} {err}");

    // What a host reads: verified, reassembled, unpacked, compiled.
    let list: Vec<String> = endpoints.split(',').map(String::from).collect();
    let etcd = Etcd::new(&list, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
    let fleet = store::FleetStore::new(&etcd, "edge").unwrap();
    let public = PublicKey::parse(&std::fs::read_to_string(dir.join("fleet.pub")).unwrap()).unwrap();
    let (manifest, signature) = fleet.bundle_head(1).unwrap();
    let manifest = bundle::verify_manifest(&manifest, &signature, &public, "edge", None, false).unwrap();
    let files = fleet.bundle_files(&manifest).unwrap();
    let tables = bundle::unpack(&manifest, &files, &dir.join("host/rev-1"), dir.join("cache")).unwrap();
    let table = blocker::compile::table::build_table(&tables.policy).unwrap();
    let list_name = table.lookup(blocker::net::Family::V4, 0xc633_6407).map(|i| table.lists[i].name.clone());
    // Counted under the name the publisher's config gives it (here its path there).
    assert_eq!(list_name, Some(path("attackers.txt")));

    // A staged rollout: canary first, then the rest.
    let (ok, out, err) = publish(Some("canary"));
    assert!(ok && out.contains("revision 2") && out.contains("groups canary"), "{out} {err}");
    assert_eq!(fleet.pointer("default").unwrap().unwrap().0.revision, 1);
    assert_eq!(fleet.pointer("canary").unwrap().unwrap().0.revision, 2);
    let (ok, _, err) =
        cli(&["fleet", "promote", "--etcd", &endpoints, "--fleet", "edge", "--revision", "2", "--group", "default"]);
    assert!(ok, "{err}");
    assert_eq!(fleet.pointer("default").unwrap().unwrap().0.revision, 2);
    // Back only by a signed rollback.
    let (ok, _, err) =
        cli(&["fleet", "promote", "--etcd", &endpoints, "--fleet", "edge", "--revision", "1", "--group", "default"]);
    assert!(!ok && err.contains("blocker fleet rollback"), "{err}");
    let key = path("fleet.key");
    let (ok, _, err) = cli(&[
        "fleet",
        "rollback",
        "--etcd",
        &endpoints,
        "--fleet",
        "edge",
        "--revision",
        "1",
        "--group",
        "default",
        "--secret-key",
        &key,
    ]);
    assert!(ok, "{err}");
    let (pointer, _) = fleet.pointer("default").unwrap().unwrap();
    assert!(store::may_follow(&pointer, "edge", "default", Some(2), 2, &public).unwrap());
    // Followed once, never replayed: the rollback took a number of its own (3).
    assert_eq!((pointer.published, fleet.latest().unwrap()), (3, 3));
    assert!(!store::may_follow(&pointer, "edge", "default", Some(2), 3, &public).unwrap());
    // Revision 2, rolled back, is not promoted again: published again it is.
    let (ok, _, err) =
        cli(&["fleet", "promote", "--etcd", &endpoints, "--fleet", "edge", "--revision", "2", "--group", "default"]);
    assert!(!ok && err.contains("publish it again"), "{err}");
    let (ok, _, err) =
        cli(&["fleet", "promote", "--etcd", &endpoints, "--fleet", "edge", "--revision", "9", "--group", "x"]);
    assert!(!ok && err.contains("no bundle of revision 9"), "{err}");

    // A config a host would refuse takes no revision.
    std::fs::write(dir.join("bad.toml"), "[policy]\ndeny_countries = [\"XY\"]\n").unwrap();
    let bad = path("bad.toml");
    let (ok, _, err) =
        cli(&["fleet", "publish", "--etcd", &endpoints, "--fleet", "edge", "--config", &bad, "--secret-key", &key]);
    assert!(!ok && err.contains("XY"), "{err}");
    assert_eq!(fleet.latest().unwrap(), 3);

    // Status: a host's state, alive while its lease holds.
    let lease = etcd.grant(2).unwrap();
    let state = store::HostState {
        host: "edge-1".into(),
        group: "canary".into(),
        revision: Some(2),
        applied_at: Some("2026-12-03T16:00:00.000Z".into()),
        error: None,
    };
    fleet.report(&state, Some(lease)).unwrap();
    let (ok, out, err) = cli(&["fleet", "status", "--etcd", &endpoints, "--fleet", "edge"]);
    assert!(ok && out.contains("host edge-1 (group canary): revision 2") && !out.contains("NOT ALIVE"), "{out} {err}");
    let (_, json, _) = cli(&["fleet", "status", "--etcd", &endpoints, "--fleet", "edge", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((v["latest"].as_u64(), v["hosts"][0]["alive"].as_bool()), (Some(3), Some(true)), "{v}");
    assert!(v["hosts"][0]["error"].is_null());
    assert!(wait_until(Duration::from_secs(8), || cli(&["fleet", "status", "--etcd", &endpoints, "--fleet", "edge"])
        .1
        .contains("NOT ALIVE")));

    // `latest` damaged by hand: refused, naming it; deleted: counted from
    // what is stored (the rollback's number included), never taken twice.
    etcd.put("blocker/edge/latest", b"oops", None).unwrap();
    let (ok, _, err) = publish(None);
    assert!(!ok && err.contains("`latest` holds \"oops\""), "{err}");
    etcd.delete_prefix("blocker/edge/latest").unwrap();
    let (ok, out, err) = publish(Some("canary"));
    assert!(ok && out.contains("revision 4"), "{out} {err}");

    // etcd down: the publisher is told, naming the endpoints.
    for i in 0..3 {
        cluster.kill_member(i);
    }
    let (ok, _, err) = publish(None);
    assert!(!ok && err.contains("no etcd endpoint answered"), "{err}");
}

/// etcd over TLS with client certificates (as a Kubernetes Secret carries
/// them): the client with the CA and a certificate reads and writes, without
/// the certificate or without the CA it is refused; the fleet commands take
/// the same files.
#[test]
fn a_member_over_tls_takes_clients_with_a_certificate_only() {
    use blocker::tls::Tls;
    use blocker_tests::{daemon::blocker_cli, etcd::TlsMember};
    let tmp = tempfile::tempdir().unwrap();
    let member = TlsMember::start(tmp.path()).unwrap();
    let endpoints = vec![member.endpoint.clone()];
    let tls = Tls {
        ca_cert: Some(member.ca.clone()),
        cert: Some(member.client_cert.clone()),
        key: Some(member.client_key.clone()),
    };
    let with = |t: &Tls| {
        Etcd::with_tls(&endpoints, Duration::from_secs(5), Duration::from_secs(5), t.config().unwrap()).unwrap()
    };
    let etcd = with(&tls);
    assert!(
        wait_until(Duration::from_secs(20), || etcd.put("blocker/tls/a", b"one", None).is_ok()),
        "{}",
        std::fs::read_to_string(tmp.path().join("etcd.log")).unwrap_or_default()
    );
    assert_eq!(etcd.get("blocker/tls/a").unwrap().0.unwrap().value, b"one");
    let no_cert = with(&Tls { cert: None, key: None, ..tls.clone() });
    assert!(no_cert.get("blocker/tls/a").is_err(), "no client certificate: refused");
    let no_ca = with(&Tls::default());
    let e = no_ca.get("blocker/tls/a").unwrap_err().to_string();
    assert!(e.contains("no etcd endpoint answered"), "{e}");

    // The fleet's commands, with the same files.
    let dir = tmp.path();
    let path = |name: &str| dir.join(name).display().to_string();
    let out = blocker_cli(&["fleet", "keygen", "--secret-key", &path("k"), "--public-key", &path("k.pub")]).unwrap();
    assert!(out.status.success());
    std::fs::write(dir.join("p.toml"), "[policy]\ndeny_countries = [\"CN\"]\n").unwrap();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let tls_args = ["--etcd-ca-cert", &ca, "--etcd-cert", &cert, "--etcd-key", &key];
    let mut publish = vec!["fleet", "publish", "--etcd", &member.endpoint, "--fleet", "edge"];
    let (config, secret) = (path("p.toml"), path("k"));
    publish.extend(["--config", &config, "--secret-key", &secret]);
    let out = blocker_cli(&[publish.as_slice(), &tls_args].concat()).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("revision 1"));
    let out = blocker_cli(&publish).unwrap();
    assert!(!out.status.success(), "without the files: refused");
    let status = ["fleet", "status", "--etcd", &member.endpoint, "--fleet", "edge", "--json"];
    let out = blocker_cli(&[status.as_slice(), &tls_args].concat()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["latest"].as_u64(), Some(1), "{v}");
    let out = blocker_cli(&[status.as_slice(), &["--etcd-cert", &cert]].concat()).unwrap();
    assert!(!out.status.success(), "a certificate without its key is refused by clap");
}
