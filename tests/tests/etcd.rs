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
