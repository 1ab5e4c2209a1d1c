//! Bans end to end: `blocker ban` against a daemon in a network namespace,
//! real pings from the sender namespace, expiry with and without the daemon,
//! persistence across a restart and a reboot (pins gone, state file kept),
//! precedence against allow lists and never-block ranges, and reloads.
#![allow(unused_crate_dependencies)]

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use blocker::control::protocol::{BanReply, BansReply, StatsReply, UnbanReply};
use blocker_tests::{
    daemon::{Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag,
};

const PINGS: u32 = 3;
// Sender addresses (blocker_tests::netns): 198.51.100.2 and 2001:db8:a::2 in
// no list; 203.0.113.200 in the allow list below.
const FREE_V4: &str = "198.51.100.2";
const FREE_V6: &str = "2001:db8:a::2";
const ALLOWED_V4: &str = "203.0.113.200";
const ALLOW: &str = "203.0.113.128/25\n";

struct Setup {
    net: NetnsPair,
    root: PinRoot,
    dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("blocker-bans-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("allow.txt"), ALLOW).unwrap();
        std::fs::write(dir.join("deny.txt"), "203.0.113.0/24\n").unwrap();
        Setup { net: NetnsPair::new().expect("netns pair"), root: PinRoot::new(&tag), dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn start(&self, extra: &[&str], log: &str) -> Daemon {
        let sock = self.file("blocker.sock");
        let state = self.file("state");
        let allow = format!("allow={}", self.file("allow.txt"));
        let deny = format!("deny={}", self.file("deny.txt"));
        let mut args = vec![
            "--pin-root",
            self.root.as_str(),
            "--socket",
            &sock,
            "run",
            "--iface",
            &self.net.rx_if,
            "--xdp-mode",
            "native",
            "--state-dir",
            &state,
            "--deny",
            &deny,
            "--allow",
            &allow,
        ];
        args.extend(extra);
        Daemon::start(&self.net.rx_ns, &args, &self.dir.join(log)).expect("daemon starts")
    }

    fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let sock = self.file("blocker.sock");
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.net.rx_ns))
            .arg(blocker_tests::daemon::blocker_bin())
            .args(["--pin-root", self.root.as_str(), "--socket", &sock])
            .args(args)
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT")
            .envs(env.iter().copied());
        cmd.output().unwrap()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_env(args, &[])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ban(&self, args: &[&str]) -> Vec<BanReply> {
        let mut full = vec!["ban", "--json"];
        full.extend(args);
        serde_json::from_str(&self.ok(&full)).expect("ban --json")
    }

    fn bans(&self) -> BansReply {
        serde_json::from_str(&self.ok(&["bans", "--json"])).expect("bans --json")
    }

    fn ping(&self, src: &str) -> u32 {
        self.net.ping_from(src, PINGS).unwrap()
    }

    fn ban_packets(&self, origin: &str) -> u64 {
        let out = self.ok(&["stats", "--iface", &self.net.rx_if, "--json"]);
        let stats: StatsReply = serde_json::from_str(&out).unwrap();
        let i = &stats.interfaces[0];
        i.lists.iter().find(|l| l.scope == "ban" && l.name == origin).map_or(0, |l| l.packets)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `f` holds, at most `limit`; returns how long it took.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_ban_drops_at_once_counts_per_origin_and_expires_without_the_daemon() {
    let s = Setup::new();
    let d = s.start(&["--metrics-listen", "9464"], "daemon.log");
    assert_eq!(s.ping(FREE_V4), PINGS, "not banned yet");
    assert_eq!(s.ping(FREE_V6), PINGS);

    let r = s.ban(&[FREE_V4, "2001:db8:a::/48", "--for", "4s", "--origin", "ids", "--reason", "scan"]);
    assert_eq!(r[0].outcome.added, 2);
    assert_eq!(r[0].interfaces, vec![s.net.rx_if.clone()]);
    // Enforced when the command returns: no wait.
    assert_eq!(s.ping(FREE_V4), 0, "banned host dropped");
    assert_eq!(s.ping(FREE_V6), 0, "an address inside a banned /48 dropped");
    assert_eq!(s.ban_packets("ids"), 2 * u64::from(PINGS), "drops counted under the origin");

    // `lookup` says what the live maps do with the address, ban included.
    let out = s.ok(&["lookup", FREE_V4]);
    assert!(out.contains(&format!("banned on {}: 198.51.100.2/32 by ids, drop, ", s.net.rx_if)), "{out}");
    let out = s.ok(&["lookup", ALLOWED_V4]);
    assert!(!out.contains("banned on"), "{out}");
    // The metrics: bans per origin, and their drops under the origin.
    let scrape = blocker_tests::http::request_in_netns(&s.net.rx_ns, "127.0.0.1:9464", "GET", "/metrics").unwrap();
    let body = scrape.body;
    assert!(body.contains("blocker_bans_active{origin=\"ids\"} 2"), "{body}");
    assert!(body.contains("blocker_bans_refused_total{reason=\"full\"} 0"), "{body}");
    assert!(
        body.lines().any(|l| l.starts_with("blocker_list_packets_total{")
            && l.contains("scope=\"ban\"")
            && l.contains("list=\"ids\"")
            && l.ends_with(&format!(" {}", 2 * PINGS))),
        "{body}"
    );
    let status = s.ok(&["status"]);
    assert!(status.contains("bans: 2 in force (ids 2)"), "{status}");
    let listed = s.bans();
    assert_eq!(listed.bans.len(), 2);
    assert_eq!(listed.origins.get("ids"), Some(&2));
    let host = listed.bans.iter().find(|b| b.target == "198.51.100.2/32").expect("listed");
    assert!(host.remaining_seconds.is_some_and(|r| r <= 4), "{host:?}");
    assert_eq!((host.origin.as_str(), host.reason.as_str(), host.packets), ("ids", "scan", u64::from(PINGS)));

    // The daemon is killed: the program alone lets the ban end on time.
    d.stop_with(libc::SIGKILL).unwrap();
    let banned_at = Instant::now();
    assert_eq!(s.ping(FREE_V4), 0, "still banned with no daemon");
    let passed = wait_until(Duration::from_secs(10), || s.net.ping_from(FREE_V4, 1).unwrap() == 1);
    assert!(passed.is_some(), "the ban never ended without the daemon");
    // The ban was set for 4 s before `banned_at`; within 1 s of its end, plus a ping's round.
    assert!(banned_at.elapsed() < Duration::from_secs(6), "ended late: {:?}", banned_at.elapsed());
    assert_eq!(s.ping(FREE_V6), PINGS, "the prefix ban ended too");

    // A new daemon finds the expired bans and removes them.
    let _d = s.start(&[], "second.log");
    assert!(s.bans().bans.is_empty());
}

#[test]
fn bans_survive_a_restart_a_reload_and_a_reboot() {
    let s = Setup::new();
    let d = s.start(&[], "daemon.log");
    s.ban(&[FREE_V4, "--reason", "forever"]);
    s.ban(&[FREE_V6, "--for", "1h"]);
    // A shorter ban of the same address keeps the later expiry.
    let r = s.ban(&[FREE_V6, "--for", "10s"]);
    assert_eq!(r[0].outcome.kept, 1);
    let v6 = |b: &BansReply| b.bans.iter().find(|b| b.target.starts_with("2001:db8:a::2")).unwrap().remaining_seconds;
    assert!(v6(&s.bans()).is_some_and(|r| r > 3500), "{:?}", s.bans());

    // A reload recompiles the table; the bans stay, their counts go on.
    assert_eq!(s.ping(FREE_V4), 0);
    s.ok(&["reload"]);
    assert_eq!(s.ping(FREE_V4), 0, "banned after a reload");
    assert_eq!(s.ban_packets("cli"), 2 * u64::from(PINGS));

    // Restart: the pinned maps and the state file agree.
    d.stop_with(libc::SIGTERM).unwrap();
    assert_eq!(s.ping(FREE_V4), 0, "banned while no daemon runs");
    let d = s.start(&[], "second.log");
    let b = s.bans();
    assert_eq!(b.bans.len(), 2, "{b:?}");
    assert!(b
        .bans
        .iter()
        .any(|b| b.target == "198.51.100.2/32" && b.remaining_seconds.is_none() && b.reason == "forever"));
    d.stop_with(libc::SIGTERM).unwrap();

    // A reboot: pins gone (detach removes them), the state file kept.
    s.ok(&["detach", "--iface", &s.net.rx_if]);
    assert_eq!(s.ping(FREE_V4), PINGS, "nothing attached");
    let d = s.start(&[], "third.log");
    assert!(d.log_text().contains("2 bans in force"), "{}", d.log_text());
    assert_eq!(s.ping(FREE_V4), 0, "restored from the state file");
    assert_eq!(s.ping(FREE_V6), 0);
    assert!(v6(&s.bans()).is_some_and(|r| r > 3500 && r <= 3600));

    // Unban.
    let out = s.ok(&["unban", FREE_V4, "192.0.2.77", "--json"]);
    let r: UnbanReply = serde_json::from_str(&out).unwrap();
    assert_eq!((r.removed, r.not_banned.clone()), (1, vec!["192.0.2.77/32".to_string()]));
    assert_eq!(s.ping(FREE_V4), PINGS, "unbanned");
}

#[test]
fn allow_lists_and_never_block_win_and_lockouts_are_refused() {
    let s = Setup::new();
    let _d = s.start(&["--never-block", "198.51.100.0/24"], "daemon.log");
    // The allow list covers 203.0.113.200: banned, but the allow list wins.
    let r = s.ban(&[ALLOWED_V4]);
    assert!(r[0].warnings.iter().any(|w| w.contains("allow list allow")), "{r:?}");
    assert_eq!(s.ping(ALLOWED_V4), PINGS, "the allow list wins over the ban");
    let out = s.ok(&["lookup", ALLOWED_V4]);
    assert!(out.contains("by cli, drop, until unbanned -- but list allow wins over bans"), "{out}");
    let r = s.ban(&[FREE_V4]);
    assert!(r[0].warnings.iter().any(|w| w.contains("never-block")), "{r:?}");
    assert_eq!(s.ping(FREE_V4), PINGS, "never-block wins over the ban");
    // Text output says so too.
    let out = s.ok(&["ban", "203.0.113.129"]);
    assert!(out.contains("note: 203.0.113.129/32: the allow list"), "{out}");

    // Everything, or the SSH client's own range: refused unless forced.
    for all in ["0.0.0.0/0", "::/0"] {
        let out = s.cli(&["ban", all]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--force") && err.contains("every"), "{err}");
    }
    let ssh = [("SSH_CONNECTION", "2001:db8:a::2 50022 2001:db8:1::1 22")];
    let out = s.cli_env(&["ban", "2001:db8:a::/64"], &ssh);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SSH client") && err.contains("2001:db8:a::2"), "{err}");
    assert_eq!(s.ping(FREE_V6), PINGS, "nothing banned");
    let out = s.cli_env(&["ban", "2001:db8:a::/64", "--force", "--for", "1m"], &ssh);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.ping(FREE_V6), 0, "forced");

    // Bad input names what and where, and bans nothing.
    let out = s.cli(&["ban", "10.0.0.1/8"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("10.0.0.0/8"));
    let out = s.cli(&["ban", "192.0.2.9", "--origin", "bad origin"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("origin"), "{out:?}");
    let list = s.file("bulk.txt");
    std::fs::write(&list, "# bulk\n192.0.2.10\n192.0.2.11 ; scanner\nnot-an-address\n").unwrap();
    let out = s.cli(&["ban", "--from", &list]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.contains("nothing was banned"), "{err}");
    assert_eq!(s.bans().bans.len(), 4, "{:?}", s.bans());
}

#[test]
fn bulk_bans_from_a_file_and_reject() {
    let s = Setup::new();
    let _d = s.start(&[], "daemon.log");
    let list = s.file("bulk.txt");
    let mut text = String::from("# 20000 bans\n");
    for i in 0..20_000u32 {
        text.push_str(&format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255));
    }
    text.push_str("198.51.100.0/24 # the sender\n");
    std::fs::write(&list, text).unwrap();
    let started = Instant::now();
    let r = s.ban(&["--from", &list, "--for", "1h", "--origin", "feed", "--reject"]);
    eprintln!("20001 bans enforced in {:?}", started.elapsed());
    assert_eq!(r.iter().map(|r| r.outcome.added).sum::<usize>(), 20_001);
    assert_eq!(s.bans().origins.get("feed"), Some(&20_001));
    // Rejected: the ping gets an answer (ICMP prohibited), not a reply.
    assert_eq!(s.ping(FREE_V4), 0);
    assert_eq!(s.ban_packets("feed"), u64::from(PINGS));
}

#[test]
fn a_lost_state_file_keeps_the_bans_the_maps_hold() {
    let s = Setup::new();
    let d = s.start(&[], "daemon.log");
    s.ban(&[FREE_V4, "--for", "1h", "--origin", "ids", "--reject"]);
    d.stop_with(libc::SIGTERM).unwrap();
    std::fs::remove_dir_all(s.file("state")).unwrap();
    let d = s.start(&[], "second.log");
    let log = d.log_text();
    assert!(log.contains("1 bans found in the pinned maps") && log.contains("kept"), "{log}");
    let b = s.bans();
    assert_eq!(b.bans.len(), 1, "{b:?}");
    let ban = &b.bans[0];
    assert_eq!((ban.target.as_str(), ban.origin.as_str(), ban.action.as_str()), ("198.51.100.2/32", "ids", "reject"));
    assert!(ban.remaining_seconds.is_some_and(|r| r > 3500 && r <= 3600), "{ban:?}");
    assert_eq!(s.ping(FREE_V4), 0, "still banned");
    assert!(std::path::Path::new(&s.file("state/bans.jsonl")).exists(), "written to a new state file");
}

#[test]
fn an_unreadable_state_file_refuses_the_start_and_attaches_nothing() {
    let s = Setup::new();
    // A directory where the state file goes: it cannot be read.
    std::fs::create_dir_all(s.dir.join("state/bans.jsonl")).unwrap();
    let sock = s.file("blocker.sock");
    let state = s.file("state");
    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--state-dir", &state, "--socket", &sock]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bans.jsonl") && err.contains("--state-dir"), "{err}");
    assert!(!s.net.rx_has_xdp().unwrap(), "nothing attached");
}

#[test]
fn events_and_top_name_the_origin_of_a_ban() {
    use std::io::BufRead as _;
    let s = Setup::new();
    let _d = s.start(&[], "daemon.log");
    s.ban(&[FREE_V4, "--origin", "ids", "--reason", "scan"]);
    let sock = s.file("blocker.sock");
    let mut events = std::process::Command::new(blocker_tests::daemon::blocker_bin())
        .args(["--socket", &sock, "events", "--json", "--list", "ids"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The stream is open once the daemon answered; pings until one is seen.
    let mut line = None;
    for _ in 0..20 {
        assert_eq!(s.net.ping_from(FREE_V4, 1).unwrap(), 0);
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            line = Some(l);
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let event: blocker::events::Event = serde_json::from_str(&line.expect("an event of the ban")).unwrap();
    assert_eq!(
        (event.list.as_deref(), event.scope.as_deref(), event.verdict.as_str(), event.source.to_string()),
        (Some("ids"), Some("ban"), "dropped", FREE_V4.to_string())
    );
    // `top` off a terminal: one snapshot, the origin among the lists.
    let out = s.ok(&["top", "--iface", &s.net.rx_if]);
    assert!(out.contains("ids"), "{out}");
}
