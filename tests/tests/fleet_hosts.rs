//! A fleet of three hosts against a real three-member etcd 3.4: each host is
//! a daemon in its own namespace pair (XDP on its veth), joined to a hub
//! namespace where etcd runs. Covered, in one sequence (etcd starts once):
//! no bundle refuses a start; publish, and every host enforces (status, fleet
//! status and pings); a staged rollout, canary first, with an etcd member
//! killed before the promote; a bundle signed by another key refused
//! everywhere; every etcd member killed (enforcement holds, status says
//! stale); a host restarted while etcd is down (it enforces the last good
//! bundle kept on disk, and says so); etcd back (every host syncs again, and
//! the next publish applies everywhere).
#![allow(unused_crate_dependencies)]

use std::{path::PathBuf, time::Duration};

use blocker::control::protocol::{FleetStatus, StatusReply};
use blocker_tests::{
    daemon::{blocker_bin, blocker_in, Daemon, PinRoot},
    etcd::{Cluster, Hub},
    netns::NetnsPair,
    unique_tag, wait_until,
};

/// Denied by the first policy, then by the second.
const FIRST: &str = "198.51.100.2";
const SECOND: &str = "203.0.113.2";

struct Host {
    name: String,
    group: &'static str,
    net: NetnsPair,
    root: PinRoot,
    dir: PathBuf,
    daemon: Option<Daemon>,
    /// Options of this host's own.
    extra: Vec<&'static str>,
}

impl Host {
    fn sock(&self) -> String {
        self.dir.join("blocker.sock").display().to_string()
    }

    fn args(&self, endpoints: &str, public: &str) -> Vec<String> {
        let mut a: Vec<String> = ["--pin-root", self.root.as_str(), "--socket", &self.sock(), "run", "--iface"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(self.net.rx_if.clone());
        for (k, v) in [
            ("--xdp-mode", "native"),
            ("--state-dir", &self.dir.join("state").display().to_string()),
            ("--cache-dir", &self.dir.join("cache").display().to_string()),
            ("--fleet-etcd", endpoints),
            ("--fleet", "edge"),
            ("--fleet-public-key", public),
            ("--fleet-group", self.group),
            ("--host-name", &self.name),
        ] {
            a.push(k.into());
            a.push(v.into());
        }
        a.extend(self.extra.iter().map(|s| s.to_string()));
        a
    }

    fn start(&mut self, endpoints: &str, public: &str, log: &str) {
        let d = Daemon::start(&self.net.rx_ns, &self.args(endpoints, public), &self.dir.join(log)).unwrap();
        self.daemon = Some(d);
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log_text).unwrap_or_default()
    }

    fn status(&self) -> StatusReply {
        let out = std::process::Command::new(blocker_bin())
            .args(["--socket", &self.sock(), "status", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn fleet(&self) -> FleetStatus {
        self.status().fleet.expect("a fleet host")
    }

    fn status_text(&self) -> String {
        let out =
            std::process::Command::new(blocker_bin()).args(["--socket", &self.sock(), "status"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The verdicts of the live maps on this host's interface (`blocker
    /// lookup`, read from the pins): (list, action) for each address.
    fn live(&self, addresses: &[&str]) -> Vec<(Option<String>, String)> {
        let mut args = vec!["--pin-root", self.root.as_str(), "lookup"];
        args.extend(addresses);
        args.extend(["--iface", &self.net.rx_if, "--json"]);
        let out = blocker_in(&self.net.rx_ns, &args).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: blocker::control::report::LookupReport = serde_json::from_slice(&out.stdout).unwrap();
        report.addresses.iter().map(|a| (a.live[0].verdict.list.clone(), a.live[0].verdict.action.clone())).collect()
    }

    /// Whether pings from `src` are answered.
    fn passes(&self, src: &str) -> bool {
        self.net.ping_from(src, 1).unwrap() == 1
    }
}

struct Fleet {
    hub: Hub,
    endpoints: String,
    dir: PathBuf,
}

impl Fleet {
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = blocker_in(&self.hub.ns, args).unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Publishes `config` signed by `key` to `group`; returns the output.
    fn publish(&self, config: &str, key: &str, group: &str) -> String {
        let (config, key) = (self.path(config), self.path(key));
        let (ok, out) = self.cli(&[
            "fleet",
            "publish",
            "--etcd",
            &self.endpoints,
            "--fleet",
            "edge",
            "--config",
            &config,
            "--secret-key",
            &key,
            "--group",
            group,
        ]);
        assert!(ok, "{out}");
        out
    }

    fn promote(&self, revision: u64, group: &str) {
        let rev = revision.to_string();
        let args =
            ["fleet", "promote", "--etcd", &self.endpoints, "--fleet", "edge", "--revision", &rev, "--group", group];
        let (ok, out) = self.cli(&args);
        assert!(ok, "{out}");
    }

    /// etcdctl against the cluster, from the hub: what anyone with write
    /// access to etcd, but not the fleet's key, can do.
    fn etcdctl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.hub.ns))
            .args(["etcdctl", "--endpoints", &self.endpoints])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self) -> serde_json::Value {
        let (ok, out) = self.cli(&["fleet", "status", "--etcd", &self.endpoints, "--fleet", "edge", "--json"]);
        assert!(ok, "{out}");
        serde_json::from_str(&out).unwrap()
    }

    /// Every host's (revision, error is null, alive), by name.
    fn hosts(&self) -> Vec<(String, Option<u64>, bool, bool)> {
        let v = self.status();
        let mut out: Vec<_> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["host"].as_str().unwrap().to_owned(),
                    h["revision"].as_u64(),
                    h["error"].is_null(),
                    h["alive"].as_bool().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

fn all_at(hosts: &[Host], revision: u64) -> bool {
    hosts.iter().all(|h| h.fleet().revision == revision)
}

#[test]
fn three_hosts_follow_one_signed_policy_through_a_rollout_and_the_loss_of_etcd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let hub = Hub::new().unwrap();
    std::fs::create_dir(dir.join("etcd")).unwrap();
    let mut cluster = Cluster::start_in(&dir.join("etcd"), &hub).unwrap();
    let mut hosts: Vec<Host> = ["canary", "default", "default"]
        .into_iter()
        .enumerate()
        .map(|(i, group)| {
            let net = NetnsPair::new().unwrap();
            hub.connect(&net.rx_ns, i as u8).unwrap();
            let hdir = dir.join(format!("host{i}"));
            std::fs::create_dir(&hdir).unwrap();
            // The canary waits for the first bundle; the last host has a
            // table budget too small for a large list.
            let extra = match i {
                0 => vec!["--fleet-wait"],
                2 => vec!["--table-memory", "640KiB"],
                _ => vec![],
            };
            let root = PinRoot::new(&unique_tag());
            Host { name: format!("edge-{i}"), group, net, root, dir: hdir, daemon: None, extra }
        })
        .collect();
    let fleet = Fleet { endpoints: cluster.endpoints(), hub, dir: dir.clone() };
    for (key, public) in [("fleet.key", "fleet.pub"), ("other.key", "other.pub")] {
        let (ok, out) =
            fleet.cli(&["fleet", "keygen", "--secret-key", &fleet.path(key), "--public-key", &fleet.path(public)]);
        assert!(ok, "{out}");
    }
    let public = fleet.path("fleet.pub");
    let endpoints = fleet.endpoints.clone();
    // Policies of lists of their own.
    std::fs::write(dir.join("first.txt"), "198.51.100.0/24\n").unwrap();
    std::fs::write(dir.join("second.txt"), "203.0.113.0/24\n").unwrap();
    for (name, list) in [("first.toml", "first.txt"), ("second.toml", "second.txt")] {
        std::fs::write(dir.join(name), format!("[policy]\ndeny = [\"{}\"]\n", fleet.path(list))).unwrap();
    }
    std::fs::write(
        dir.join("both.toml"),
        format!("[policy]\ndeny = [\"{}\", \"{}\"]\n", fleet.path("first.txt"), fleet.path("second.txt")),
    )
    .unwrap();

    // No bundle anywhere: the start is refused, saying what to do.
    let args = hosts[1].args(&endpoints, &public);
    let out = blocker_in(&hosts[1].net.rx_ns, &args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no bundle to enforce") && err.contains("--fleet-wait"), "{err}");

    // Told to wait, the canary attaches once the first bundle is published.
    std::thread::scope(|scope| {
        let canary = &mut hosts[0];
        let log = canary.dir.join("daemon.log");
        let (endpoints, public) = (&endpoints, &public);
        let waiting = scope.spawn(move || canary.start(endpoints, public, "daemon.log"));
        let said = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(wait_until(Duration::from_secs(10), || said().contains("no bundle yet")), "{}", said());
        assert!(!said().contains("ready:"));
        assert!(fleet.publish("first.toml", "fleet.key", "canary").contains("revision 1"));
        waiting.join().unwrap();
    });
    // Publish: every host of three enforces revision 1.
    fleet.promote(1, "default");
    for h in &mut hosts[1..] {
        h.start(&endpoints, &public, "daemon.log");
    }
    for h in &hosts {
        let f = h.fleet();
        assert_eq!((f.revision, f.source.as_str(), f.stale), (1, "etcd", false), "{f:?}");
        assert!(!h.passes(FIRST), "{}: revision 1 drops {FIRST}", h.name);
        assert!(h.passes(SECOND));
        // The verdicts of its live maps, under the publisher's list name.
        let live = h.live(&[FIRST, SECOND]);
        assert_eq!(live[0], (Some(fleet.path("first.txt")), "drop".to_owned()), "{}", h.name);
        assert_eq!(live[1].0, None, "{live:?}");
    }
    let fleet_ref = &fleet;
    let every = |revision: u64, ok: bool| {
        move || fleet_ref.hosts().iter().all(|(_, r, good, alive)| *r == Some(revision) && *good == ok && *alive)
    };
    assert!(wait_until(Duration::from_secs(10), every(1, true)), "{}", fleet.status());

    // A staged rollout: the canary first ...
    assert!(fleet.publish("second.toml", "fleet.key", "canary").contains("revision 2"));
    assert!(wait_until(Duration::from_secs(10), || hosts[0].fleet().revision == 2), "{}", hosts[0].log());
    assert!(hosts[0].passes(FIRST) && !hosts[0].passes(SECOND));
    std::thread::sleep(Duration::from_secs(1));
    for h in &hosts[1..] {
        assert_eq!(h.fleet().revision, 1);
        assert!(!h.passes(FIRST) && h.passes(SECOND));
    }
    // ... then, with one etcd member killed, the rest.
    cluster.kill_member(0);
    fleet.promote(2, "default");
    assert!(wait_until(Duration::from_secs(20), || all_at(&hosts, 2)), "{}", hosts[1].log());
    for h in &hosts {
        assert!(h.passes(FIRST) && !h.passes(SECOND), "{}", h.name);
    }
    assert!(wait_until(Duration::from_secs(10), every(2, true)), "{}", fleet.status());
    cluster.start_member(0).unwrap();

    // Whoever writes to etcd without the key cannot send a host back: a
    // pointer to an older revision without a signed rollback is refused.
    fleet.etcdctl(&["put", "blocker/edge/groups/canary", r#"{"revision":1}"#]);
    assert!(wait_until(Duration::from_secs(10), || hosts[0].fleet().refused.is_some()), "{}", hosts[0].log());
    let f = hosts[0].fleet();
    assert!(f.refused.as_deref().is_some_and(|r| r.contains("older than the applied 2")), "{f:?}");
    assert!(f.revision == 2 && !hosts[0].passes(SECOND));
    // Pointed at what is in force again: nothing stands refused.
    fleet.promote(2, "canary");
    assert!(wait_until(Duration::from_secs(10), || hosts[0].fleet().refused.is_none()), "{}", hosts[0].log());

    // A bundle signed by another key: refused everywhere, revision 2 stays.
    let out = fleet.publish("both.toml", "other.key", "canary");
    assert!(out.contains("revision 3"), "{out}");
    fleet.promote(3, "default");
    assert!(
        wait_until(Duration::from_secs(20), || hosts.iter().all(|h| h.fleet().refused.is_some())),
        "{}",
        hosts[2].log()
    );
    for h in &hosts {
        let f = h.fleet();
        assert_eq!(f.revision, 2);
        assert!(f.refused.as_deref().is_some_and(|r| r.contains("revision 3") && r.contains("signature")), "{f:?}");
        assert!(!h.passes(SECOND), "still revision 2");
        assert!(h.status_text().contains("REFUSED"));
    }
    assert!(wait_until(Duration::from_secs(10), every(2, false)), "{}", fleet.status());

    // Every etcd member killed: enforcement holds, status says stale.
    for i in 0..3 {
        cluster.kill_member(i);
    }
    assert!(wait_until(Duration::from_secs(20), || hosts.iter().all(|h| h.fleet().stale)), "{}", hosts[1].log());
    for h in &hosts {
        assert!(!h.passes(SECOND), "{} still enforces revision 2", h.name);
        let text = h.status_text();
        assert!(text.contains("STALE") && text.contains("revision 2 stays in force"), "{text}");
    }

    // A host restarted while etcd is down enforces the last good bundle, and says so.
    let log = hosts[1].daemon.take().unwrap().stop_with(libc::SIGTERM).unwrap();
    assert!(log.contains("stopping"), "{log}");
    hosts[1].start(&endpoints, &public, "daemon-restarted.log");
    let f = hosts[1].fleet();
    assert_eq!(f.revision, 2);
    assert!(f.source.contains("last good bundle on disk") && f.stale, "{f:?}");
    assert!(hosts[1].log().contains("enforcing the last good bundle, revision 2"), "{}", hosts[1].log());
    assert!(!hosts[1].passes(SECOND) && hosts[1].passes(FIRST));

    // etcd back: every host syncs again, and the next publish applies everywhere.
    for i in 0..3 {
        cluster.start_member(i).unwrap();
    }
    assert!(wait_until(Duration::from_secs(30), || cluster.healthy()));
    assert!(wait_until(Duration::from_secs(45), || hosts.iter().all(|h| !h.fleet().stale)), "{}", hosts[1].log());
    assert!(fleet.publish("both.toml", "fleet.key", "canary").contains("revision 4"));
    fleet.promote(4, "default");
    assert!(wait_until(Duration::from_secs(20), || all_at(&hosts, 4)), "{}", hosts[2].log());
    for h in &hosts {
        assert!(!h.passes(FIRST) && !h.passes(SECOND), "{}", h.name);
        assert!(h.fleet().refused.is_none());
    }
    assert!(wait_until(Duration::from_secs(15), every(4, true)), "{}", fleet.status());

    // A file changed in etcd after it was signed: refused (published to a
    // group no host follows, changed, then promoted to the canary).
    assert!(fleet.publish("second.toml", "fleet.key", "staging").contains("revision 5"));
    fleet.etcdctl(&["put", "blocker/edge/bundles/00000000000000000005/files/0000/000000", "203.0.114.0/24\n"]);
    fleet.promote(5, "canary");
    assert!(wait_until(Duration::from_secs(10), || hosts[0].fleet().refused.is_some()), "{}", hosts[0].log());
    let f = hosts[0].fleet();
    assert!(f.refused.as_deref().is_some_and(|r| r.contains("not the one signed")), "{f:?}");
    assert!(f.revision == 4 && !hosts[0].passes(FIRST) && !hosts[0].passes(SECOND));

    // A bundle that does not compile on one host (its table budget is too
    // small): refused there, said in the fleet's status, applied elsewhere.
    // 20,000 addresses over as many /16s: 0.7 MiB of classifier maps, past
    // the last host's 640 KiB (the earlier tables take 0.5 MiB).
    let big: String =
        (0..20_000u32).map(|i| format!("{}.{}.{}.7/32\n", 11 + i % 89, (i / 89) % 256, (i * 7) % 256)).collect();
    std::fs::write(dir.join("big.txt"), format!("{big}198.51.100.0/24\n")).unwrap();
    std::fs::write(dir.join("big.toml"), format!("[policy]\ndeny = [\"{}\"]\n", fleet.path("big.txt"))).unwrap();
    assert!(fleet.publish("big.toml", "fleet.key", "canary").contains("revision 6"));
    fleet.promote(6, "default");
    assert!(wait_until(Duration::from_secs(20), || all_at(&hosts[..2], 6)), "{}", hosts[1].log());
    assert!(wait_until(Duration::from_secs(20), || hosts[2].fleet().refused.is_some()), "{}", hosts[2].log());
    let f = hosts[2].fleet();
    assert!(f.revision == 4 && f.refused.as_deref().is_some_and(|r| r.contains("table too large")), "{f:?}");
    assert!(!hosts[2].passes(SECOND), "host 2 keeps revision 4");
    assert!(hosts[0].passes(SECOND) && !hosts[0].passes(FIRST));
    let expected = [
        ("edge-0".to_owned(), Some(6), true, true),
        ("edge-1".to_owned(), Some(6), true, true),
        ("edge-2".to_owned(), Some(4), false, true),
    ];
    assert!(wait_until(Duration::from_secs(10), || fleet.hosts() == expected), "{}", fleet.status());

    // A bundle file changed on disk, then a reload (SIGHUP): refused, the
    // running table kept (unsigned bytes are never enforced).
    let files = hosts[1].dir.join("state/fleet/edge/r00000000000000000006/files");
    let list = std::fs::read_dir(&files).unwrap().next().unwrap().unwrap().path();
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str("203.0.113.0/24\n");
    std::fs::write(&list, text).unwrap();
    let reloads = hosts[1].status().reloads;
    hosts[1].daemon.as_ref().unwrap().signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || hosts[1].status().reloads > reloads));
    let last = hosts[1].status().last_reload.unwrap();
    assert!(!last.ok && last.error.as_deref().is_some_and(|e| e.contains("not those signed")), "{last:?}");
    assert!(hosts[1].passes(SECOND), "the changed file is not enforced");

    // A signed rollback is followed once; replayed later, it is refused.
    let key = fleet.path("fleet.key");
    let (ok, out) = fleet.cli(&[
        "fleet",
        "rollback",
        "--etcd",
        &endpoints,
        "--fleet",
        "edge",
        "--revision",
        "4",
        "--group",
        "canary",
        "--secret-key",
        &key,
    ]);
    assert!(ok, "{out}");
    assert!(wait_until(Duration::from_secs(10), || hosts[0].fleet().revision == 4), "{}", hosts[0].log());
    assert!(!hosts[0].passes(SECOND), "revision 4 again");
    let rollback = fleet.etcdctl(&["get", "--print-value-only", "blocker/edge/groups/canary"]);
    assert!(fleet.publish("second.toml", "fleet.key", "canary").contains("revision 8"));
    assert!(wait_until(Duration::from_secs(10), || hosts[0].fleet().revision == 8), "{}", hosts[0].log());
    fleet.etcdctl(&["put", "blocker/edge/groups/canary", rollback.trim()]);
    assert!(wait_until(Duration::from_secs(10), || hosts[0].fleet().refused.is_some()), "{}", hosts[0].log());
    let f = hosts[0].fleet();
    assert!(f.revision == 8 && f.refused.as_deref().is_some_and(|r| r.contains("replay")), "{f:?}");
}
