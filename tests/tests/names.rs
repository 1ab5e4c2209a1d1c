//! Every view names a list the same way, and its counters follow its name: a
//! daemon whose lists are named by long paths (two of them alike in their last
//! 150 bytes), read through `stats`, the metrics and `lookup`; a list a reload
//! removes and the next one gives again; lookup in monitor mode.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use blocker::control::{
    protocol::{StatsReply, StatusReply},
    report::LookupReport,
};
use blocker_tests::{
    daemon::{blocker_in, Daemon, PinRoot},
    http::request_in_netns,
    netns::NetnsPair,
    unique_tag,
};

const METRICS: &str = "127.0.0.1:9466";

struct Setup {
    net: NetnsPair,
    root: PinRoot,
    dir: tempfile::TempDir,
    config: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("blocker.toml").to_str().unwrap().to_owned();
        Setup { net: NetnsPair::new().unwrap(), root: PinRoot::new(&unique_tag()), dir, config }
    }

    /// A list file at `dir/file` (directories made), holding `cidr`.
    fn list(&self, dir: &str, file: &str, cidr: &str) -> String {
        let d = self.dir.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(file);
        std::fs::write(&path, format!("{cidr}\n")).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// The config: `lists` denied by path (so named by it), in `mode`.
    fn write_config(&self, lists: &[&str], mode: &str) {
        let deny: Vec<String> = lists.iter().map(|l| format!("{l:?}")).collect();
        let text = format!(
            "[daemon]\npin_root = {:?}\nsocket = {:?}\nmetrics_listen = {METRICS:?}\n\n[[interface]]\nname = {:?}\n\
             xdp_mode = \"native\"\nmode = {mode:?}\n\n[policy]\ndeny = [{}]\nnever_block = [\"192.0.2.0/24\"]\n",
            self.root.as_str(),
            self.socket(),
            self.net.rx_if,
            deny.join(", ")
        );
        let tmp = format!("{}.tmp", self.config);
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, &self.config).unwrap();
    }

    fn socket(&self) -> String {
        self.dir.path().join("blocker.sock").to_str().unwrap().to_owned()
    }

    fn cli(&self, args: &[&str]) -> Vec<u8> {
        let socket = self.socket();
        let mut all = vec!["--pin-root", self.root.as_str(), "--socket", &socket];
        all.extend(args);
        let out = blocker_in(&self.net.rx_ns, &all).unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn reload(&self) {
        self.cli(&["reload"]);
    }

    /// Packets counted under each list name (live lists).
    fn packets(&self) -> Vec<(String, u64)> {
        let stats: StatsReply = serde_json::from_slice(&self.cli(&["stats", "--json"])).unwrap();
        let mut out: Vec<(String, u64)> =
            stats.interfaces[0].lists.iter().filter(|l| l.live).map(|l| (l.name.clone(), l.packets)).collect();
        // Link-local chatter (neighbour discovery) counts under never-block.
        out.retain(|(name, _)| name != "never-block");
        out.sort();
        out
    }
}

#[test]
fn every_view_names_a_list_whole_and_its_counters_follow_the_name() {
    let s = Setup::new();
    let long = "d".repeat(180);
    let a = s.list(&format!("a-{long}"), "threats.txt", "198.51.100.0/24");
    // Two lists alike in their last 150 bytes and more.
    let tail = "t".repeat(150);
    let b1 = s.list("b1", &format!("{tail}.txt"), "203.0.113.0/25");
    let b2 = s.list("b2", &format!("{tail}.txt"), "203.0.113.128/25");
    s.write_config(&[&a, &b1, &b2], "enforce");
    let _daemon = Daemon::start(&s.net.rx_ns, &["run", "--config", &s.config], &s.dir.path().join("d.log")).unwrap();
    for src in ["198.51.100.2", "203.0.113.2", "203.0.113.200"] {
        assert_eq!(s.net.ping_from(src, 2).unwrap(), 0, "{src} denied");
    }
    let mut want = vec![(a.clone(), 2), (b1.clone(), 2), (b2.clone(), 2)];
    want.sort();
    assert_eq!(s.packets(), want, "stats names each list whole");

    // The metrics: one label set per list, with the whole name.
    let body = request_in_netns(&s.net.rx_ns, METRICS, "GET", "/metrics").unwrap().body;
    for list in [&a, &b1, &b2] {
        let series: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("blocker_list_packets_total{") && l.contains(&format!("list=\"{list}\"")))
            .collect();
        assert_eq!(series.len(), 1, "{list}: {series:?}");
        assert!(series[0].ends_with(" 2"), "{series:?}");
    }
    let status: StatusReply = serde_json::from_slice(&s.cli(&["status", "--json"])).unwrap();
    assert!(status.lists.iter().any(|l| l.name == b2), "status names it whole too");

    // lookup with the same policy agrees with the live maps, long names and all.
    let policy_args = ["--deny", a.as_str(), "--deny", b1.as_str(), "--deny", b2.as_str()];
    let mut args = vec!["lookup", "--json", "198.51.100.2", "203.0.113.200", "--never-block", "192.0.2.0/24"];
    args.extend(policy_args);
    let report: LookupReport = serde_json::from_slice(&s.cli(&args)).unwrap();
    for (address, list) in report.addresses.iter().zip([&a, &b2]) {
        let live = &address.live[0];
        assert_eq!(live.verdict.list.as_ref(), Some(list));
        assert_eq!((live.agrees, live.outcome.as_str()), (Some(true), "drop"), "{live:?}");
    }

    // A reload removes b2, the next gives it again: its counter goes on (as
    // after a restart), with no "(retired)" row left beside it.
    s.write_config(&[&a, &b1], "enforce");
    s.reload();
    s.write_config(&[&a, &b1, &b2], "enforce");
    s.reload();
    assert_eq!(s.net.ping_from("203.0.113.200", 1).unwrap(), 0);
    let stats: StatsReply = serde_json::from_slice(&s.cli(&["stats", "--json"])).unwrap();
    let rows: Vec<_> = stats.interfaces[0].lists.iter().filter(|l| l.name == b2).collect();
    assert_eq!(rows.len(), 1, "one row for b2: {rows:?}");
    assert_eq!((rows[0].live, rows[0].packets), (true, 3), "2 before, 1 after");

    // Monitor mode: the live answer carries the interface's mode.
    s.write_config(&[&a, &b1, &b2], "monitor");
    s.reload();
    let mut args = vec!["lookup", "--json", "198.51.100.2", "--never-block", "192.0.2.0/24"];
    args.extend(policy_args);
    let report: LookupReport = serde_json::from_slice(&s.cli(&args)).unwrap();
    let live = &report.addresses[0].live[0];
    assert_eq!((live.verdict.action.as_str(), live.outcome.as_str()), ("drop", "monitor"), "{live:?}");
    assert_eq!(live.mode, blocker::dataplane::maps::Mode::Monitor);
    args.retain(|a| *a != "--json");
    let text = String::from_utf8_lossy(&s.cli(&args)).into_owned();
    assert!(text.contains("(the interface is in monitor mode: counted as monitored, passed)"), "{text}");
    assert_eq!(s.net.ping_from("198.51.100.2", 2).unwrap(), 2, "passed, as lookup says");
}
