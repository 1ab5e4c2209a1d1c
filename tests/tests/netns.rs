//! End-to-end tests: real packets between two network namespaces joined by a veth
//! pair, `blocker run` on the receiving end (native XDP), counters read back with
//! `blocker stats --json`.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::path::PathBuf;

use blocker::{
    control::protocol::{InterfaceStats, LastReload, StatsReply, StatusReply},
    dataplane::{maps::Mode, pins},
};
use blocker_common::counter;

use blocker_tests::{
    daemon::{blocker_in, Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag,
};

const PINGS: u32 = 5;
/// Ethernet + IPv4 + ICMP header + ping's default 56 bytes of payload.
const PING4_FRAME: u64 = 14 + 20 + 8 + 56;
const PING6_FRAME: u64 = 14 + 40 + 8 + 56;

// Sender addresses (see blocker_tests::netns): 203.0.113.2 and 2001:db8:b::2 are
// denied; 203.0.113.200 and 2001:db8:b:1::2 sit in allow exceptions inside the
// denied ranges; 198.51.100.2 and 2001:db8:a::2 are in no list.
const DENY: &str = "# test deny list\n203.0.113.0/24\n2001:db8:b::/48\n";
const ALLOW: &str = "203.0.113.128/25\n2001:db8:b:1::/64\n";

struct Setup {
    net: NetnsPair,
    root: PinRoot,
    dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("blocker-test-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("deny.txt"), DENY).unwrap();
        std::fs::write(dir.join("allow.txt"), ALLOW).unwrap();
        Setup { net: NetnsPair::new().expect("netns pair"), root: PinRoot::new(&tag), dir }
    }

    /// The control socket of this test's daemon.
    fn socket(&self) -> String {
        self.file("blocker.sock")
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// `blocker --pin-root R --socket S run --iface RX EXTRA...`: a daemon of this test.
    fn run_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args =
            vec!["--pin-root", self.root.as_str(), "--socket", &self.socket(), "run", "--iface", &self.net.rx_if]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// A daemon with the deny and allow lists of this test, native mode.
    fn start(&self, extra: &[&str], log: &str) -> Daemon {
        let deny = format!("deny={}", self.file("deny.txt"));
        let allow = format!("allow={}", self.file("allow.txt"));
        let mut args = self.run_args(&["--deny", &deny, "--allow", &allow, "--xdp-mode", "native"]);
        args.extend(extra.iter().map(|a| a.to_string()));
        Daemon::start(&self.net.rx_ns, &args, &self.dir.join(log)).expect("daemon starts")
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let sock = self.socket();
        let mut full = vec!["--pin-root", self.root.as_str(), "--socket", &sock];
        full.extend(args);
        blocker_in(&self.net.rx_ns, &full).unwrap()
    }

    /// `blocker status --json`, read as the protocol's type.
    fn status(&self) -> StatusReply {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json is a StatusReply")
    }

    /// Waits (at most 30 s) until the daemon has tried `n` reloads since it
    /// started, and returns how the last one ended: typed state, not a log line.
    fn wait_reloads(&self, n: u64) -> LastReload {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let st = self.status();
            if st.reloads >= n {
                return st.last_reload.expect("a reload that ran is described");
            }
            assert!(std::time::Instant::now() < deadline, "waited for reload {n}; {} ran: {st:?}", st.reloads);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `blocker stats --json` of the protected interface.
    fn stats(&self) -> InterfaceStats {
        let out = self.cli(&["stats", "--iface", &self.net.rx_if, "--json"]);
        assert!(out.status.success(), "stats failed: {}", String::from_utf8_lossy(&out.stderr));
        let reply: StatsReply = serde_json::from_slice(&out.stdout).expect("stats --json is a StatsReply");
        reply.interfaces.into_iter().next().expect("one interface")
    }

    /// (packets, bytes) counted under `list`.
    fn list_counts(&self, list: &str) -> (u64, u64) {
        let s = self.stats();
        let l = s.list(list).unwrap_or_else(|| panic!("list {list} not in stats: {s:?}"));
        (l.packets, l.bytes)
    }

    fn list_counter(&self, list: &str) -> u64 {
        self.list_counts(list).0
    }

    fn ping(&self, src: &str) -> u32 {
        self.net.ping_from(src, PINGS).unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn blocked_sources_dropped_allowed_delivered_counters_exact() {
    let s = Setup::new();
    let _d = s.start(&[], "daemon.log");
    assert!(s.net.rx_has_xdp().unwrap());

    assert_eq!(s.ping("198.51.100.2"), PINGS, "unlisted IPv4 source delivered");
    assert_eq!(s.ping("2001:db8:a::2"), PINGS, "unlisted IPv6 source delivered");
    assert_eq!(s.ping("203.0.113.200"), PINGS, "IPv4 allow exception delivered");
    assert_eq!(s.ping("2001:db8:b:1::2"), PINGS, "IPv6 allow exception delivered");
    assert_eq!(s.ping("203.0.113.2"), 0, "denied IPv4 source dropped");
    assert_eq!(s.ping("2001:db8:b::2"), 0, "denied IPv6 source dropped");

    let n = u64::from(PINGS);
    assert_eq!(s.list_counter("deny"), 2 * n);
    assert_eq!(s.list_counts("deny").1, n * (PING4_FRAME + PING6_FRAME));
    assert_eq!(s.list_counter("allow"), 2 * n);
    assert_eq!(s.list_counts("allow").1, n * (PING4_FRAME + PING6_FRAME));
    let st = s.stats();
    assert_eq!(st.total(counter::DROPPED), 2 * n);
    assert!(st.total(counter::PASSED) >= 4 * n, "{st:?}");
    assert_eq!(st.mode, Mode::Enforce);
}

#[test]
fn monitor_mode_drops_nothing_but_counts() {
    let s = Setup::new();
    let _d = s.start(&["--monitor"], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), PINGS, "monitor mode delivers denied sources");
    assert_eq!(s.list_counter("deny"), u64::from(PINGS));
    let st = s.stats();
    assert_eq!(st.mode, Mode::Monitor);
    assert_eq!(st.total(counter::MONITORED), u64::from(PINGS));
    assert_eq!(st.total(counter::DROPPED), 0);
}

#[test]
fn sigkill_keeps_blocking_restart_adopts_detach_removes() {
    let s = Setup::new();
    let d = s.start(&[], "first.log");
    assert_eq!(s.ping("203.0.113.2"), 0);

    // A second daemon on the same interface is refused while the first one runs.
    let second = s.cli(&["run", "--iface", &s.net.rx_if, "--deny", &s.file("deny.txt")]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another blocker"), "{err}");

    d.stop_with(libc::SIGKILL).unwrap();
    assert!(s.net.rx_has_xdp().unwrap(), "program stays attached after SIGKILL");
    assert_eq!(s.ping("203.0.113.2"), 0, "still blocking with no daemon");
    assert_eq!(s.ping("198.51.100.2"), PINGS);
    assert_eq!(s.list_counter("deny"), 2 * u64::from(PINGS), "stats work without a daemon");

    let d = s.start(&[], "second.log");
    assert!(d.log_text().contains("adopted"), "restart adopts the pinned link:\n{}", d.log_text());
    assert_eq!(s.ping("203.0.113.2"), 0);
    assert_eq!(s.list_counter("deny"), 3 * u64::from(PINGS), "counters survive the restart");

    // Detach is refused while a daemon holds the interface.
    let out = s.cli(&["detach", "--iface", &s.net.rx_if]);
    assert!(!out.status.success());

    let log = d.stop_with(libc::SIGTERM).unwrap();
    assert!(log.contains("stays attached"), "{log}");
    assert!(s.net.rx_has_xdp().unwrap(), "graceful stop leaves the program attached");
    assert_eq!(s.ping("203.0.113.2"), 0);

    let out = s.cli(&["detach", "--iface", &s.net.rx_if]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!s.net.rx_has_xdp().unwrap(), "detach removes the program");
    assert!(!pins::iface_dir(&s.root.0, &s.net.rx_if).exists(), "detach removes the pins");
    assert_eq!(s.ping("203.0.113.2"), PINGS, "traffic flows after detach");

    let out = s.cli(&["stats", "--iface", &s.net.rx_if]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not attached"));
}

#[test]
fn sighup_reloads_and_bad_lists_change_nothing() {
    let s = Setup::new();
    let mut d = s.start(&[], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), 0);
    assert_eq!(s.ping("198.51.100.2"), PINGS);

    std::fs::write(s.file("deny.txt"), "198.51.100.0/24\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(s.wait_reloads(1).ok);
    assert_eq!(s.ping("203.0.113.2"), PINGS, "no longer denied after reload");
    assert_eq!(s.ping("198.51.100.2"), 0, "newly denied after reload");

    std::fs::write(s.file("deny.txt"), "203.0.113.0/24\n10.0.0.0/33\n").unwrap();
    d.signal(libc::SIGHUP);
    let last = s.wait_reloads(2);
    assert!(!last.ok && last.trigger == "SIGHUP", "{last:?}");
    d.wait_for_log("reload aborted", 1).unwrap();
    let log = d.log_text();
    assert!(log.contains("deny.txt:2:") && log.contains("10.0.0.0/33"), "error names file, line and text:\n{log}");
    assert_eq!(s.ping("203.0.113.2"), PINGS, "running table unchanged");
    assert_eq!(s.ping("198.51.100.2"), 0, "running table unchanged");
}

#[test]
fn bad_list_at_start_is_refused_before_touching_the_kernel() {
    let s = Setup::new();
    std::fs::write(s.file("bad.txt"), "203.0.113.0/24\n\n# fine\nnot-an-address\n").unwrap();
    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--deny", &s.file("bad.txt")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.txt:4:") && err.contains("not-an-address"), "{err}");
    assert!(!s.net.rx_has_xdp().unwrap());
    assert!(!s.root.0.exists(), "nothing pinned");

    let out = s.cli(&["run", "--iface", "no-such-if0", "--deny", &s.file("deny.txt")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no interface named"));
}

#[test]
fn hostile_sources_are_refused_at_once_and_nothing_is_attached() {
    let s = Setup::new();
    let fifo = s.file("fifo.txt");
    let c = std::ffi::CString::new(fifo.as_str()).unwrap();
    // SAFETY: mkfifo on a path of the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (source, expected) in [(fifo.as_str(), "is a FIFO, not a regular file"), ("/dev/zero", "is a character device")]
    {
        let started = std::time::Instant::now();
        let out = s.cli(&["run", "--iface", &s.net.rx_if, "--deny", source]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expected), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{source}: refused at once");
        assert!(!s.net.rx_has_xdp().unwrap());
    }
    // A never-block range that disables blocking is applied, with a warning; an
    // IPv4-mapped IPv6 address in a list is the IPv4 address.
    std::fs::write(s.file("mapped.txt"), "::ffff:203.0.113.0/120\n").unwrap();
    let mapped = format!("mapped={}", s.file("mapped.txt"));
    let args = s.run_args(&["--deny", &mapped, "--never-block", "::/0", "--xdp-mode", "native"]);
    let d = Daemon::start(&s.net.rx_ns, &args, &s.dir.join("daemon.log")).unwrap();
    assert!(
        d.log_text().contains("never-block ::/0 covers every IPv6 address: nothing of it is ever dropped"),
        "{}",
        d.log_text()
    );
    assert_eq!(s.ping("203.0.113.2"), 0, "the mapped prefix is enforced as IPv4");
    assert_eq!(s.list_counter("mapped"), u64::from(PINGS));
    d.stop_with(libc::SIGTERM).unwrap();
}

/// `ip netns exec` remounts /sys in a mount namespace of its own, so a bpffs that
/// blocker mounts there dies with the process, and the attachment with it. blocker
/// refuses to start, with how to run it, rather than claim the program stays.
#[test]
fn pins_in_a_private_mount_namespace_are_refused() {
    let s = Setup::new();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &s.net.rx_ns])
        .arg(blocker_tests::daemon::blocker_bin())
        .args(["--pin-root", s.root.as_str(), "--socket", &s.socket(), "run", "--iface", &s.net.rx_if])
        .args(["--deny", &s.file("deny.txt")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("mounted only in blocker's own mount namespace") && err.contains("nsenter --net="), "{err}");
    assert!(!s.net.rx_has_xdp().unwrap(), "nothing attached");
    assert!(!std::path::Path::new(&s.socket()).exists(), "no socket left behind");
    // The same start through nsenter, in the host's mount namespace, runs.
    let d = s.start(&[], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), 0);
    d.stop_with(libc::SIGTERM).unwrap();
}

/// A start that fails leaves no pins, maps or socket behind: here the second
/// interface refuses native mode (lo has no driver XDP) after the first was
/// attached, and then a table over the memory budget is refused.
#[test]
fn failed_start_leaves_nothing_behind() {
    let s = Setup::new();
    let out = s.cli(&[
        "run",
        "--iface",
        &s.net.rx_if,
        "--iface",
        "lo",
        "--xdp-mode",
        "native",
        "--deny",
        &s.file("deny.txt"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot attach XDP program to lo"), "{err}");
    assert!(!s.net.rx_has_xdp().unwrap(), "the first interface's attachment is removed");
    assert!(!s.root.0.exists(), "no pin tree left: {:?}", std::fs::read_dir(&s.root.0).map(|d| d.count()));
    assert!(!std::path::Path::new(&s.socket()).exists(), "no socket left");

    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--table-memory", "64KiB", "--deny", &s.file("deny.txt")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("budget"), "{err}");
    assert!(!s.net.rx_has_xdp().unwrap());
    assert!(!s.root.0.exists(), "no pin tree left");
    assert!(!std::path::Path::new(&s.socket()).exists(), "no socket left");
    // With the process gone, no pin and no attached program, nothing holds a map.

    // A failed start next to a running attachment leaves that attachment alone.
    let d = s.start(&[], "daemon.log");
    d.stop_with(libc::SIGTERM).unwrap();
    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--table-memory", "64KiB", "--deny", &s.file("deny.txt")]);
    assert!(!out.status.success());
    assert!(s.net.rx_has_xdp().unwrap(), "the earlier run's attachment stays");
    assert_eq!(s.ping("203.0.113.2"), 0, "and keeps blocking");
    // Also when the start fails on another interface, in monitor mode, with other
    // lists: the earlier attachment keeps its table and its mode.
    std::fs::write(s.file("other.txt"), "198.51.100.0/24\n").unwrap();
    let other = format!("other={}", s.file("other.txt"));
    let out = s.cli(&[
        "run",
        "--iface",
        &s.net.rx_if,
        "--iface",
        "lo",
        "--xdp-mode",
        "native",
        "--monitor",
        "--deny",
        &other,
    ]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.stats().mode, Mode::Enforce);
    assert_eq!(s.ping("203.0.113.2"), 0, "the earlier table still drops");
    assert_eq!(s.ping("198.51.100.2"), PINGS, "the failed start's list was never applied");
}

#[test]
fn pin_tree_of_another_user_is_refused_and_ours_is_closed() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let s = Setup::new();
    let iface_dir = pins::iface_dir(&s.root.0, &s.net.rx_if);
    std::fs::create_dir_all(&iface_dir).unwrap();
    // Another local user (nobody) made the interface's pin directory.
    std::os::unix::fs::chown(&iface_dir, Some(65534), Some(65534)).unwrap();
    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--deny", &s.file("deny.txt")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("owned by uid 65534"), "{err}");
    assert!(!s.net.rx_has_xdp().unwrap());
    // Ours, but open to everyone (as bpffs mounts often are): closed, then used.
    std::os::unix::fs::chown(&iface_dir, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&s.root.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let d = s.start(&[], "daemon.log");
    assert!(d.log_text().contains("set to 0700"), "{}", d.log_text());
    for level in [s.root.0.clone(), iface_dir.parent().unwrap().to_path_buf(), iface_dir.clone()] {
        assert_eq!(std::fs::metadata(&level).unwrap().mode() & 0o7777, 0o700, "{}", level.display());
    }
    assert_eq!(s.ping("203.0.113.2"), 0);
    d.stop_with(libc::SIGTERM).unwrap();
}

#[test]
fn one_daemon_several_interfaces_each_with_counters() {
    let s = Setup::new();
    let extra = blocker_tests::netns::ExtraLink::new(&s.net).unwrap();
    std::fs::write(s.file("extra.txt"), "198.18.0.2\n").unwrap();
    let extra_deny = format!("extra={}", s.file("extra.txt"));
    let _d = s.start(&["--iface", &extra.rx_if, "--deny", &extra_deny], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), 0);
    assert_eq!(extra.ping(PINGS).unwrap(), 0, "second interface blocks too");

    let out = s.cli(&["stats", "--json"]);
    let v: StatsReply = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.interfaces.len(), 2, "{v:?}");
    for i in &v.interfaces {
        let extra_packets = i.list("extra").unwrap().packets;
        let dropped = i.total(counter::DROPPED);
        if i.interface == extra.rx_if {
            assert_eq!(extra_packets, u64::from(PINGS), "{i:?}");
            assert_eq!(dropped, u64::from(PINGS));
        } else {
            assert_eq!(extra_packets, 0, "each interface counts its own traffic: {i:?}");
            assert_eq!(dropped, u64::from(PINGS));
        }
    }
    drop(_d);
    for iface in [&s.net.rx_if, &extra.rx_if] {
        assert!(s.cli(&["detach", "--iface", iface]).status.success());
    }
}

#[test]
fn ebpf_trace_logs_only_when_enabled() {
    let s = Setup::new();
    let mut d = s.start(&["--ebpf-log-level", "5"], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), 0);
    d.wait_for_log("action 2", 1).unwrap();
    d.stop_with(libc::SIGTERM).unwrap();

    let d = s.start(&[], "quiet.log");
    assert_eq!(s.ping("203.0.113.2"), 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!d.log_text().contains("action 2"), "no per-packet log by default:\n{}", d.log_text());
}

#[test]
fn unprivileged_user_is_told_what_to_do() {
    let s = Setup::new();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(blocker_tests::daemon::blocker_bin())
        .args(["--pin-root", s.root.as_str(), "run", "--iface", "lo", "--deny", &s.file("deny.txt")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root") && err.contains("sudo"), "{err}");
}

#[test]
fn country_and_list_sources_from_urls_with_stale_fallback() {
    use std::sync::{Arc, Mutex};

    use blocker_tests::http::{serve_in_netns, Script};

    let s = Setup::new();
    // A registry file that puts the denied test range in country "XA", and a plain
    // list served over HTTP, both on loopback inside the daemon's namespace.
    let rir = "2|test|20260821|2|19700101|20260821|+0000\n\
               test|XA|ipv4|203.0.113.0|128|20200101|allocated|A\n\
               test|XA|ipv6|2001:db8:b::|48|20200101|assigned|A\n";
    let rir_server = Arc::new(Mutex::new(Script { fallback: Some(rir.as_bytes().to_vec()), ..Default::default() }));
    let list_server =
        Arc::new(Mutex::new(Script { fallback: Some(b"198.51.100.0/24\n".to_vec()), ..Default::default() }));
    let rir_url = format!("{}/delegated-test-latest", serve_in_netns(&s.net.rx_ns, rir_server.clone()).unwrap());
    let list_url = format!("web={}/list.txt", serve_in_netns(&s.net.rx_ns, list_server.clone()).unwrap());
    let cache = s.file("cache");
    let args = s.run_args(&[
        "--xdp-mode",
        "native",
        "--country-source",
        &rir_url,
        "--deny-country",
        "xa",
        "--deny",
        &list_url,
        "--cache-dir",
        &cache,
    ]);
    let d = Daemon::start(&s.net.rx_ns, &args, &s.dir.join("daemon.log")).unwrap();
    assert_eq!(s.ping("203.0.113.2"), 0, "denied through the RIR file's country");
    assert_eq!(s.ping("203.0.113.200"), PINGS, "outside the 128 addresses of the record");
    assert_eq!(s.ping("2001:db8:b::2"), 0);
    assert_eq!(s.ping("198.51.100.2"), 0, "denied through the URL list");
    assert_eq!(s.list_counter("country:XA"), 2 * u64::from(PINGS));
    assert_eq!(s.list_counter("web"), u64::from(PINGS));

    // The servers stall: a reload reads the cached copies and never waits for
    // them (only the refresh tasks fetch), and neither does status.
    rir_server.lock().unwrap().stall = true;
    list_server.lock().unwrap().stall = true;
    let requests = || rir_server.lock().unwrap().requests.len() + list_server.lock().unwrap().requests.len();
    let before = requests();
    let started = std::time::Instant::now();
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.signal(libc::SIGHUP);
    assert!(s.wait_reloads(2).ok);
    assert!(s.cli(&["status"]).status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(requests(), before, "a reload fetches nothing");
    assert_eq!(s.ping("203.0.113.2"), 0);
    assert_eq!(s.ping("198.51.100.2"), 0);
}

#[test]
fn lookup_answers_from_policy_and_live_maps() {
    let s = Setup::new();
    let d = s.start(&[], "daemon.log");
    let deny = format!("deny={}", s.file("deny.txt"));
    let allow = format!("allow={}", s.file("allow.txt"));
    let run = |extra: &[&str]| {
        let mut args = vec!["lookup", "203.0.113.7", "203.0.113.200", "2001:db8:a::1", "--iface", &s.net.rx_if];
        args.extend(extra);
        let out = s.cli(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Same policy as the daemon: both answers agree.
    let out = run(&["--deny", &deny, "--allow", &allow]);
    assert!(out.contains("policy: list deny -> drop"), "{out}");
    assert!(out.contains("policy: list allow -> allow"), "{out}");
    assert!(out.contains(&format!("live on {}: list deny -> drop (agrees", s.net.rx_if)), "{out}");
    assert!(out.contains(&format!("live on {}: in no list -> pass (agrees", s.net.rx_if)), "{out}");
    assert!(!out.contains("DIFFERS"), "{out}");
    // A different policy: the live maps disagree, and lookup says so.
    let out = run(&["--deny", &allow]);
    assert!(out.contains("DIFFERS"), "{out}");
    // The same answers as data.
    let out = run(&["--deny", &deny, "--allow", &allow, "--json"]);
    let report: blocker::control::report::LookupReport = serde_json::from_str(&out).unwrap();
    let first = &report.addresses[0];
    assert_eq!(first.address.to_string(), "203.0.113.7");
    let live = &first.live[0];
    assert_eq!((live.interface.as_str(), live.verdict.list.as_deref()), (s.net.rx_if.as_str(), Some("deny")));
    assert_eq!((live.verdict.action.as_str(), live.agrees, live.attached_here), ("drop", Some(true), true));
    assert_eq!(report.addresses[2].live[0].verdict.list, None);
    drop(d);
}

#[test]
fn regions_list_show_and_unknown_code() {
    let out = blocker_tests::daemon::blocker_cli(&["regions", "list"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ipverse country-ip-blocks (CC0 1.0), data of 2026-02-01"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("DE   Germany")), "{text}");
    assert_eq!(text.lines().filter(|l| l.len() > 3 && l.as_bytes()[2] == b' ' && !l.starts_with('#')).count(), 237);
    let out = blocker_tests::daemon::blocker_cli(&["regions", "show", "li"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("LI Liechtenstein\n"), "{text}");
    let out = blocker_tests::daemon::blocker_cli(&["run", "--iface", "lo", "--deny-country", "CN,GERMANY"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown country code \"GERMANY\"; did you mean DE (Germany)?"), "{err}");
}

/// Replaces a list file atomically, so a reload never reads half a file.
fn write_atomic(path: &str, text: &str) {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn live_reload_200_times_under_traffic_never_leaks_or_drops_wrongly() {
    let s = Setup::new();
    // Version A (small) and B (a million prefixes) differ (the IPv6 range and an
    // extra range flip), but 203.0.113.0/25 is denied in both and 198.51.100.0/24
    // in neither. Every reload changes the table's size, and so its maps.
    let a = "203.0.113.0/24\n2001:db8:b::/48\n".to_string();
    let mut rng = blocker_tests::Rng(0x5eed);
    let hosts: Vec<u32> = blocker_tests::tables::random_v4_hosts(&mut rng, 1_000_100)
        .into_iter()
        .filter(|h| h >> 8 != 0x00c6_3364 && h >> 8 != 0x00cb_0071 && h >> 8 != 0x00c0_0002)
        .take(1_000_000)
        .collect();
    let b = format!("203.0.113.0/25\n192.0.2.128/25\n{}", blocker_tests::tables::list_text(&hosts, &[], &[]));
    write_atomic(&s.file("deny.txt"), &a);
    std::fs::write(s.file("allow.txt"), "").unwrap();
    let d = s.start(&[], "daemon.log");

    // Traffic runs until the reloads are done.
    let pings = 1_000_000;
    let mut blocked = s.net.ping_in_background("203.0.113.2", pings, "0.005").unwrap();
    let mut allowed = s.net.ping_in_background("198.51.100.2", pings, "0.005").unwrap();
    let mut flipping = s.net.ping_in_background("2001:db8:b::2", pings, "0.005").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    for i in 1..=200 {
        write_atomic(&s.file("deny.txt"), if i % 2 == 1 { &b } else { &a });
        d.signal(libc::SIGHUP);
        assert!(s.wait_reloads(i).ok, "reload {i}");
    }
    eprintln!("200 reloads took {:?}", started.elapsed());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(blocked.is_running() && allowed.is_running() && flipping.is_running());
    let (blocked_sent, blocked_replies) = blocked.stop().unwrap();
    let (allowed_sent, allowed_replies) = allowed.stop().unwrap();
    let (flip_sent, flip_replies) = flipping.stop().unwrap();
    assert!(d.log_text().matches("reloaded").count() >= 200);
    let largest = d
        .log_text()
        .lines()
        .filter_map(|l| l.split("reloaded ").nth(1)?.split(" IPv4").next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(largest >= 990_000, "the large table was loaded: {largest} IPv4 ranges at most");
    assert_eq!(blocked_replies, 0, "a packet from a range denied in both versions got through");
    // The last echo may be cut off by the stop: allow one unanswered.
    assert!(allowed_replies + 1 >= allowed_sent, "a packet from a range allowed in both versions was dropped");
    assert!(flip_replies > 0 && flip_replies < flip_sent, "the flipping range was both dropped and delivered");
    // Every drop is counted, under the deny list, once.
    let dropped_flip = u64::from(flip_sent - flip_replies);
    let counted = s.list_counter("deny");
    assert!((u64::from(blocked_sent) + dropped_flip).abs_diff(counted) <= 1, "{counted}");
    let st = s.stats();
    assert_eq!(st.total(counter::DROPPED), counted);
    assert!(st.total(counter::PASSED) + 1 >= u64::from(allowed_sent + flip_replies));
}

#[test]
fn restart_under_traffic_leaves_no_unfiltered_window() {
    let s = Setup::new();
    let d = s.start(&[], "first.log");
    let blocked = s.net.ping_in_background("203.0.113.2", 1500, "0.004").unwrap();
    let allowed = s.net.ping_in_background("198.51.100.2", 1500, "0.004").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.stop_with(libc::SIGKILL).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let d = s.start(&[], "second.log");
    assert!(d.log_text().contains("adopted"));
    let (sent, replies) = blocked.finish().unwrap();
    let (allowed_sent, allowed_replies) = allowed.finish().unwrap();
    assert_eq!(replies, 0, "blocked traffic got through during the restart");
    assert_eq!(allowed_replies, allowed_sent);
    assert_eq!(s.list_counter("deny"), u64::from(sent));
}

#[test]
fn pins_of_another_layout_are_replaced_atomically() {
    let s = Setup::new();
    let d = s.start(&[], "first.log");
    d.stop_with(libc::SIGKILL).unwrap();
    // Make the running attachment look like one made by a blocker whose map layout
    // differs: move its pins under another layout version.
    let ours = pins::iface_dir(&s.root.0, &s.net.rx_if);
    let layout = ours.parent().unwrap().file_name().unwrap().to_str().unwrap().to_owned();
    let old = s.root.0.join("v1").join(&s.net.rx_if);
    assert_ne!(layout, "v1");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::rename(&ours, &old).unwrap();
    assert!(s.net.rx_has_xdp().unwrap());

    let blocked = s.net.ping_in_background("203.0.113.2", 400, "0.005").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let d = s.start(&[], "second.log");
    let (sent, replies) = blocked.finish().unwrap();
    assert!(d.log_text().contains("found pins of map layout v1"), "{}", d.log_text());
    assert_eq!(replies, 0, "blocked traffic got through during the upgrade ({sent} sent)");
    assert!(!old.exists(), "old layout's pins removed");
    assert!(ours.join("link").exists());
    assert_eq!(s.ping("203.0.113.2"), 0);
    assert_eq!(s.ping("198.51.100.2"), PINGS);
    drop(d);
    assert!(s.cli(&["detach", "--iface", &s.net.rx_if]).status.success());
    assert!(!s.net.rx_has_xdp().unwrap(), "one link only: detaching the new pins removes the program");
}

#[test]
fn detach_on_exit_and_ssh_client_exemption() {
    let s = Setup::new();
    let deny = format!("deny={}", s.file("deny.txt"));
    let args = s.run_args(&["--deny", &deny, "--detach-on-exit"]);
    // Started from an SSH session whose client is a denied address: it stays reachable.
    let ssh = [("SSH_CONNECTION", "203.0.113.2 50000 192.0.2.1 22")];
    let d = Daemon::start_with_env(&s.net.rx_ns, &args, &s.dir.join("daemon.log"), &ssh).unwrap();
    assert!(d.log_text().contains("never blocked: 203.0.113.2/32 (SSH client of this session)"), "{}", d.log_text());
    assert_eq!(s.ping("203.0.113.2"), PINGS, "the operator's SSH client is never blocked");
    assert_eq!(s.ping("2001:db8:b::2"), 0);
    let log = d.stop_with(libc::SIGTERM).unwrap();
    assert!(log.contains("detached (--detach-on-exit)"), "{log}");
    assert!(!s.net.rx_has_xdp().unwrap());
    assert!(!pins::iface_dir(&s.root.0, &s.net.rx_if).exists());
}

#[test]
fn config_file_run_reload_and_check() {
    let s = Setup::new();
    let config = s.file("blocker.toml");
    let write_config = |mode: &str, deny: &str| {
        let text = format!(
            "[daemon]\npin_root = \"{}\"\ncache_dir = \"{}\"\nsocket = \"{}\"\n\n[[interface]]\nname = \"{}\"\nxdp_mode = \"native\"\nmode = \"{mode}\"\n\n[policy]\ndeny = [\"deny={}\"]\nnever_block = [\"192.0.2.0/24\"]\n",
            s.root.as_str(),
            s.file("cache"),
            s.socket(),
            s.net.rx_if,
            deny
        );
        write_atomic(&config, &text);
    };
    write_config("enforce", &s.file("deny.txt"));
    let out = blocker_tests::daemon::blocker_cli(&["check-config", "--config", &config]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("valid") && text.contains("list deny: drop -> 1 IPv4 + 1 IPv6 ranges"), "{text}");
    assert!(text.contains("never blocked: 192.0.2.0/24 (configured)"), "{text}");

    let mut d = Daemon::start(&s.net.rx_ns, &["run", "--config", &config], &s.dir.join("daemon.log")).unwrap();
    assert_eq!(s.ping("203.0.113.2"), 0);
    // The config changes: monitor mode and another list; SIGHUP applies both.
    std::fs::write(s.file("deny2.txt"), "198.51.100.0/24\n").unwrap();
    write_config("monitor", &s.file("deny2.txt"));
    d.signal(libc::SIGHUP);
    assert!(s.wait_reloads(1).ok);
    assert_eq!(s.ping("203.0.113.2"), PINGS, "no longer denied");
    assert_eq!(s.ping("198.51.100.2"), PINGS, "denied, but the interface is in monitor mode now");
    assert_eq!(s.stats().mode, Mode::Monitor);
    // A broken config is refused on reload; the running state stays.
    write_atomic(&config, "[[interface]]\nname = \"x\"\nbogus = 1\n");
    d.signal(libc::SIGHUP);
    let last = s.wait_reloads(2);
    assert!(!last.ok && last.error.as_deref().is_some_and(|e| e.contains("unknown field `bogus`")), "{last:?}");
    d.wait_for_log("reload aborted", 1).unwrap();
    assert!(d.log_text().contains("unknown field `bogus`"), "{}", d.log_text());
    assert_eq!(s.stats().mode, Mode::Monitor);
    // A valid config whose list is broken: refused too, and `status` keeps
    // describing what runs (monitor mode, the deny2 list), not the refused file.
    std::fs::write(s.file("deny3.txt"), "198.51.100.0/33\n").unwrap();
    write_config("enforce", &s.file("deny3.txt"));
    d.signal(libc::SIGHUP);
    assert!(!s.wait_reloads(3).ok);
    let v = s.status();
    assert_eq!(v.interfaces[0].mode, Mode::Monitor, "{v:?}");
    let sources: Vec<&str> = v.sources.iter().map(|src| src.source.as_str()).collect();
    assert!(sources.iter().any(|src| src.ends_with("deny2.txt")), "{sources:?}");
    assert!(!sources.iter().any(|src| src.ends_with("deny3.txt")), "{sources:?}");
    assert_eq!(s.stats().mode, Mode::Monitor);

    // A URL new in the config has no cached copy: the reload does not wait for
    // it; it is fetched in the background, and its arrival reloads.
    use std::sync::{Arc, Mutex};
    let server = Arc::new(Mutex::new(blocker_tests::http::Script {
        fallback: Some(b"203.0.113.0/24\n".to_vec()),
        ..Default::default()
    }));
    let url = format!("{}/new.txt", blocker_tests::http::serve_in_netns(&s.net.rx_ns, server).unwrap());
    write_config("enforce", &url);
    d.signal(libc::SIGHUP);
    // Reload 4 is refused for want of a copy (the log says so); the fetch's
    // arrival makes reload 5, which applies.
    let last = s.wait_reloads(5);
    assert!(last.ok && last.trigger.contains("new.txt: content changed"), "{last:?}");
    assert!(d.log_text().contains("no cached copy yet of"), "{}", d.log_text());
    assert_eq!(s.ping("203.0.113.2"), 0, "denied by the URL list once it arrived");

    // An optional URL that cannot be fetched does not hold a reload back.
    let text = std::fs::read_to_string(&config).unwrap();
    let with_dead = text
        .replace(&format!("\"deny={url}\"]"), &format!("\"deny={url}\", \"optional:dead=http://127.0.0.1:9/none\"]"));
    assert_ne!(text, with_dead);
    write_atomic(&config, &with_dead);
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.ping("203.0.113.2"), 0);

    // A key that only a restart applies is named, never ignored in silence.
    let text = std::fs::read_to_string(&config).unwrap().replace("xdp_mode = \"native\"", "xdp_mode = \"generic\"");
    write_atomic(&config, &text);
    let out = s.cli(&["reload"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("not applied until blocker restarts: interface ") && said.contains("xdp_mode"), "{said}");
}

#[test]
fn control_socket_status_and_reload() {
    let s = Setup::new();
    let _d = s.start(&[], "daemon.log");
    let mode = std::fs::metadata(s.socket()).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600, "root-only socket");

    // Twelve clients that connect and say nothing, and one that sends an endless
    // line: none of them delays the next `status`.
    let idle: Vec<std::os::unix::net::UnixStream> =
        (0..12).map(|_| std::os::unix::net::UnixStream::connect(s.socket()).unwrap()).collect();
    let mut flood = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    {
        use std::io::{Read as _, Write as _};
        // Past the cap (32 MiB: `blocker ban --from` sends large requests).
        let _ = flood.write_all(&vec![b'x'; (32 << 20) + 1]);
        flood.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        let _ = flood.read_to_string(&mut answer);
        assert!(answer.contains("request over 33554432 bytes"), "{answer:?}");
    }
    let started = std::time::Instant::now();
    let out = s.cli(&["status"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "status took {:?}", started.elapsed());
    drop(idle);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("interface {}: attached in native (driver) mode, program id", s.net.rx_if)),
        "{text}"
    );
    assert!(text.contains("list deny: drop (1 IPv4 + 2 IPv6 ranges)"), "{text}");
    assert!(text.contains("last reload: none since start"), "{text}");
    let v = s.status();
    // A small policy's maps, from the kernel's own accounting (fdinfo memlock of
    // the pinned maps and of the maps of the program on the link): the two direct
    // tables (256 KiB each) and a few blocks, the event ring buffer (1 MiB),
    // the port map of scopes (192 KiB, there whether scopes are used or not)
    // and the bucket arrays of the two empty ban maps (16 bytes a slot) and
    // the ban filter (2 MiB).
    let memory = v.interfaces[0].map_memory_bytes.unwrap();
    let table = v.interfaces[0].table_bytes.unwrap();
    assert!((512 << 10..520 << 10).contains(&table), "{table}");
    let fixed = u64::from(blocker_common::events::RING_BYTES)
        + blocker_common::scope::PORT_MAP_BYTES as u64
        + 2 * 16 * u64::from(blocker_common::bans::DEFAULT_MAX_BANS)
        + 8 * u64::from(blocker_common::bans::FILTER_WORDS);
    assert!(memory > table + fixed && memory < fixed + (1 << 20), "{memory}");

    // `blocker reload` applies a changed list and reports it.
    write_atomic(&s.file("deny.txt"), "198.51.100.0/24\n");
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("reloaded: "));
    assert_eq!(s.ping("198.51.100.2"), 0);
    assert_eq!(s.ping("203.0.113.2"), PINGS);

    // A bad list: the reload fails with the reason, nothing changes.
    write_atomic(&s.file("deny.txt"), "198.51.100.0/24\nbad line\n");
    let out = s.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reload aborted") && err.contains("deny.txt:2:"), "{err}");
    assert_eq!(s.ping("198.51.100.2"), 0);
    let v = s.status();
    assert!(!v.last_reload.as_ref().unwrap().ok, "{v:?}");
    assert!(v.interfaces[0].program_id.unwrap() > 0);

    // With no daemon, the CLI says what to do.
    drop(_d);
    let out = s.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no blocker daemon answers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn source_file_changes_and_url_refreshes_reload_by_themselves() {
    use std::sync::{Arc, Mutex};

    use blocker_tests::http::{serve_in_netns, Script};

    let s = Setup::new();
    let server = Arc::new(Mutex::new(Script { fallback: Some(b"198.18.0.0/15\n".to_vec()), ..Default::default() }));
    let url = format!("refresh=1s:web={}/list.txt", serve_in_netns(&s.net.rx_ns, server.clone()).unwrap());
    let cache = s.file("cache");
    let mut d = s.start(&["--watch-debounce", "300ms", "--deny", &url, "--cache-dir", &cache], "daemon.log");
    assert!(d.log_text().contains("a change to a source file (300 ms debounce)"), "{}", d.log_text());
    assert_eq!(s.ping("198.51.100.2"), PINGS);

    // A list file changes on disk: reloaded with no signal.
    write_atomic(&s.file("deny.txt"), &format!("{DENY}198.51.100.0/24\n"));
    let last = s.wait_reloads(1);
    assert!(last.ok && last.trigger.starts_with("changed on disk: "), "{last:?}");
    assert!(d.log_text().contains(&s.file("deny.txt")), "the trigger names the file:\n{}", d.log_text());
    assert_eq!(s.ping("198.51.100.2"), 0, "denied by the changed file");

    // A broken edit is refused with file:line, and nothing changes; the fix applies.
    std::fs::write(s.file("deny.txt"), format!("{DENY}198.51.100.0/24\n198.51.100.300\n")).unwrap();
    assert!(!s.wait_reloads(2).ok);
    d.wait_for_log("reload aborted", 1).unwrap();
    assert!(d.log_text().contains("deny.txt:5:"), "{}", d.log_text());
    assert_eq!(s.ping("198.51.100.2"), 0, "running table unchanged");
    let status = s.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("last reload: FAILED") && text.contains("on changed on disk"), "{text}");
    write_atomic(&s.file("deny.txt"), DENY);
    assert!(s.wait_reloads(3).ok);
    assert_eq!(s.ping("198.51.100.2"), PINGS);

    // The URL is fetched again every second; unchanged content reloads nothing.
    let reloads = d.log_text().matches("reloading (").count();
    let requests = server.lock().unwrap().requests.len();
    std::thread::sleep(std::time::Duration::from_millis(3000));
    assert!(server.lock().unwrap().requests.len() >= requests + 2, "refreshed every second");
    assert_eq!(d.log_text().matches("reloading (").count(), reloads, "no reload for unchanged content");
    // New content: reloaded.
    server.lock().unwrap().fallback = Some(b"198.51.100.0/24\n".to_vec());
    d.wait_for_log("list.txt: content changed", 1).unwrap();
    assert!(s.wait_reloads(4).ok);
    assert_eq!(s.ping("198.51.100.2"), 0, "denied by the refreshed URL list");
    assert_eq!(s.list_counter("web"), u64::from(PINGS));
    let status = s.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("refreshed every 1s") && text.contains("reloaded when it changes"), "{text}");

    // The server fails: the refresh says so, and the running table stays.
    server.lock().unwrap().fallback = None;
    d.wait_for_log("fetch failed (HTTP status 500); using the last good copy", 1).unwrap();
    assert_eq!(s.ping("198.51.100.2"), 0, "still denied from the last good copy");

    // An HTML error page with status 200: not valid, the last good copy stays.
    server.lock().unwrap().fallback = Some(b"<html>Service unavailable</html>\n".to_vec());
    d.wait_for_log("the new content is not valid; the last good copy is kept", 1).unwrap();
    assert_eq!(s.ping("198.51.100.2"), 0);
    // Status 200 with an empty body: held back like a failed fetch, and shown.
    server.lock().unwrap().fallback = Some(Vec::new());
    d.wait_for_log("new content held back: 0 prefixes where the last good copy has 1", 1).unwrap();
    assert_eq!(s.ping("198.51.100.2"), 0, "the last good copy stays in use");
    let text = String::from_utf8_lossy(&s.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("HELD: new content held back") && text.contains("--accept-shrink"), "{text}");
    // The operator accepts it.
    let out = s.cli(&["reload", "--accept-shrink"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("list web is now empty"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(s.ping("198.51.100.2"), PINGS, "the accepted empty list blocks nothing");
    let text = String::from_utf8_lossy(&s.cli(&["status"]).stdout).into_owned();
    assert!(!text.contains("HELD"), "{text}");

    // A local file the operator empties is applied, with a warning in the log and in status.
    write_atomic(&s.file("deny.txt"), "");
    d.wait_for_log("list deny is now empty (it had 3 ranges)", 1).unwrap();
    assert_eq!(s.ping("203.0.113.2"), PINGS);
    let text = String::from_utf8_lossy(&s.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("last reload: ok") && text.contains("WARNING: list deny is now empty"), "{text}");
}

#[test]
fn interface_that_goes_and_comes_back_is_attached_again() {
    let s = Setup::new();
    let mut d = s.start(&[], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), 0);

    s.net.delete_link().unwrap();
    d.wait_for_log("interface is gone", 1).unwrap();
    let v = s.status();
    assert_eq!(v.interfaces[0].present, Some(false), "{v:?}");

    s.net.add_link().unwrap();
    d.wait_for_log("interface is back", 1).unwrap();
    assert!(s.net.rx_has_xdp().unwrap(), "attached to the new device");
    assert_eq!(s.ping("203.0.113.2"), 0, "blocking again");
    assert_eq!(s.ping("198.51.100.2"), PINGS);
    assert_eq!(s.list_counter("deny"), 2 * u64::from(PINGS), "counters kept across the re-attach");
    let v = s.status();
    assert_eq!(v.interfaces[0].present, Some(true), "{v:?}");
}

/// A pinned link belongs to an ifindex, not a name. Rename the protected device and
/// give its name to a new one: blocker moves to the device with the configured
/// name, says what it did with the old one, and status is the kernel's fact. The
/// same after a restart.
#[test]
fn renamed_interface_the_device_with_the_name_is_protected() {
    let s = Setup::new();
    let mut d = s.start(&[], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), 0);

    let old = s.net.rename_away('o').unwrap();
    d.wait_for_log("no interface has that name now; the program stays on", 1).unwrap();
    assert!(s.net.has_xdp(&old).unwrap(), "the renamed device keeps the program until the name is back");
    let v = s.status();
    assert_eq!(v.interfaces[0].present, Some(false), "{v:?}");
    assert!(!v.interfaces[0].enforcing, "{v:?}");
    assert!(v.interfaces[0].attached.contains(&old), "{v:?}");

    s.net.add_link().unwrap();
    d.wait_for_log("interface is back", 1).unwrap();
    assert!(d.log_text().contains(&format!("the pinned attachment was on {old}")), "{}", d.log_text());
    assert!(s.net.rx_has_xdp().unwrap(), "the new device with the name is protected");
    assert!(!s.net.has_xdp(&old).unwrap(), "detached from the renamed device, as the log says");
    assert_eq!(s.ping("203.0.113.2"), 0, "blocking on the new device");
    assert_eq!(s.ping("198.51.100.2"), PINGS);
    let v = s.status();
    assert!(v.interfaces[0].enforcing, "{v:?}");

    // After a restart: the pinned link is on a renamed device when blocker starts.
    d.stop_with(libc::SIGTERM).unwrap();
    let old2 = s.net.rename_away('p').unwrap();
    s.net.add_link().unwrap();
    let d = s.start(&[], "daemon2.log");
    let log = d.log_text();
    assert!(log.contains(&format!("the pinned attachment was on {old2}")), "{log}");
    assert!(!log.contains("adopted"), "{log}");
    assert!(s.net.rx_has_xdp().unwrap() && !s.net.has_xdp(&old2).unwrap());
    assert_eq!(s.ping("203.0.113.2"), 0, "blocking on the device with the name after a restart");
    let v = s.status();
    assert!(v.interfaces[0].enforcing, "{v:?}");
}

/// A device moved to another network namespace keeps its index, and a new device
/// here can take both its name and its index: the link's index then matches while
/// the program filters the other namespace. blocker checks the device's own XDP
/// program (netlink), moves to the device here, and status never says enforcing
/// while denied traffic passes.
#[test]
fn moved_interface_whose_index_is_taken_again_is_protected() {
    let s = Setup::new();
    let mut d = s.start(&[], "daemon.log");
    assert_eq!(s.ping("203.0.113.2"), 0);
    let index = s.net.rx_index().unwrap();
    let elsewhere = format!("blk-mv-{}", unique_tag());
    blocker_tests::sh("ip", &["netns", "add", &elsewhere]).unwrap();
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = blocker_tests::sh("ip", &["netns", "del", &self.0]);
        }
    }
    let _guard = Ns(elsewhere.clone());
    // The receiving end moves away; the sending end is renamed and stripped; a
    // new pair takes the old names, and the old index.
    blocker_tests::sh("ip", &["-n", &s.net.rx_ns, "link", "set", &s.net.rx_if, "netns", &elsewhere]).unwrap();
    let tag = &s.net.rx_if[3..];
    let old_tx = format!("btm{tag}");
    for args in [
        vec!["link", "set", "dev", &s.net.tx_if, "down"],
        vec!["link", "set", "dev", &s.net.tx_if, "name", &old_tx],
        vec!["addr", "flush", "dev", &old_tx],
    ] {
        let mut full = vec!["-n", s.net.tx_ns.as_str()];
        full.extend(args.iter().map(|a| &**a));
        blocker_tests::sh("ip", &full).unwrap();
    }
    s.net.add_link_at(Some(index)).unwrap();
    assert_eq!(s.net.rx_index().unwrap(), index, "the new device has the old index");
    d.wait_for_log("the pinned attachment was on a device with index", 1).unwrap();
    assert!(s.net.rx_has_xdp().unwrap(), "the device here is protected");
    assert_eq!(s.ping("203.0.113.2"), 0, "denied traffic dropped on the device here");
    assert_eq!(s.ping("198.51.100.2"), PINGS);
    assert!(s.status().interfaces[0].enforcing);
    let moved = blocker_tests::sh("ip", &["-n", &elsewhere, "-d", "link", "show", &s.net.rx_if]).unwrap();
    assert!(!moved.contains("prog/xdp"), "detached from the moved device: {moved}");
}

/// The device with the name cannot take the program (a bridge refuses native
/// XDP): the earlier attachment stays on the renamed device, still filtering,
/// and nothing claims the new device is protected.
#[test]
fn failed_attach_to_the_new_device_leaves_the_renamed_one_protected() {
    let s = Setup::new();
    let d = s.start(&[], "daemon.log");
    d.stop_with(libc::SIGTERM).unwrap();
    let old = s.net.rename_away('q').unwrap();
    blocker_tests::sh("ip", &["-n", &s.net.rx_ns, "link", "add", &s.net.rx_if, "type", "bridge"]).unwrap();
    blocker_tests::sh("ip", &["-n", &s.net.rx_ns, "link", "set", &s.net.rx_if, "up"]).unwrap();
    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--xdp-mode", "native", "--deny", &s.file("deny.txt")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("the earlier attachment stays on {old}")), "{err}");
    assert!(s.net.has_xdp(&old).unwrap(), "the renamed device keeps the program");
    assert!(pins::iface_dir(&s.root.0, &s.net.rx_if).join("link").exists(), "and its pin");
}

/// A start on two interfaces that both take over earlier attachments fails on
/// the second (another daemon holds it): the first keeps its table and mode.
#[test]
fn failed_start_on_a_second_takeover_changes_neither() {
    let s = Setup::new();
    let extra = blocker_tests::netns::ExtraLink::new(&s.net).unwrap();
    let d = s.start(&["--iface", &extra.rx_if], "daemon.log");
    d.stop_with(libc::SIGTERM).unwrap();
    // Another daemon now manages the second interface (its own socket).
    let other_socket = s.file("other.sock");
    let deny = format!("deny={}", s.file("deny.txt"));
    let args = [
        "--pin-root",
        s.root.as_str(),
        "--socket",
        &other_socket,
        "run",
        "--iface",
        &extra.rx_if,
        "--deny",
        &deny,
        "--xdp-mode",
        "native",
    ];
    let _other = Daemon::start(&s.net.rx_ns, &args, &s.dir.join("other.log")).unwrap();
    std::fs::write(s.file("other.txt"), "198.51.100.0/24\n").unwrap();
    let other = format!("other={}", s.file("other.txt"));
    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--iface", &extra.rx_if, "--monitor", "--deny", &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another blocker process is managing"), "{err}");
    assert_eq!(s.stats().mode, Mode::Enforce, "the first interface's mode is unchanged");
    assert_eq!(s.ping("203.0.113.2"), 0, "its table too");
    assert_eq!(s.ping("198.51.100.2"), PINGS);
}

/// systemd's notify protocol, read on a socket of the test's (as systemd would
/// with Type=notify): READY=1 only once the program is on the interface, with a
/// status line that says what is enforced; a reload updates it; SIGTERM says
/// STOPPING=1.
#[test]
fn systemd_hears_ready_only_when_enforcing_then_status_and_stopping() {
    let s = Setup::new();
    let path = s.dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let deny = format!("deny={}", s.file("deny.txt"));
    let args = s.run_args(&["--deny", &deny, "--xdp-mode", "native"]);
    let notify = [("NOTIFY_SOCKET", path.to_str().unwrap())];
    let d = Daemon::start_with_env(&s.net.rx_ns, &args, &s.dir.join("daemon.log"), &notify).unwrap();
    let ready = next();
    assert!(s.net.rx_has_xdp().unwrap(), "READY=1 comes only once the program is attached");
    let rx = &s.net.rx_if;
    assert_eq!(ready, format!("READY=1\nSTATUS=enforcing 2 prefixes on {rx}; no reload yet\n"));
    d.signal(libc::SIGHUP);
    let status = next();
    assert!(status.starts_with(&format!("STATUS=enforcing 2 prefixes on {rx}; last reload ok ")), "{status}");
    d.stop_with(libc::SIGTERM).unwrap();
    assert_eq!(next(), "STOPPING=1\nSTATUS=stopping\n");
}

/// The shipped systemd unit: systemd accepts it, and the capabilities it grants
/// (CapabilityBoundingSet=, for a root service) are enough to attach, reload,
/// restart and adopt, while any one fewer is refused.
#[test]
fn systemd_unit_verifies_and_its_capabilities_are_enough() {
    let s = Setup::new();
    let unit_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/blocker.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let bin = blocker_tests::daemon::blocker_bin();
    let local = s.dir.join("blocker.service");
    std::fs::write(&local, unit.replace("/usr/local/bin/blocker", bin.to_str().unwrap())).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&local).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit limits capabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect();
    assert_eq!(caps.len(), 3, "{caps:?}");
    let bounding = |caps: &[&String]| {
        let mut arg = "--bounding-set=-all".to_string();
        for c in caps {
            arg.push_str(&format!(",+{c}"));
        }
        arg
    };
    let deny = format!("deny={}", s.file("deny.txt"));
    let args = s.run_args(&["--deny", &deny]);
    for missing in &caps {
        let fewer: Vec<&String> = caps.iter().filter(|c| c != &missing).collect();
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", s.net.rx_ns))
            .args(["setpriv", &bounding(&fewer), "--inh-caps=-all", "--"])
            .arg(&bin)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"),
            "without {missing}: {err}"
        );
    }
    let all: Vec<&String> = caps.iter().collect();
    let wrapper = ["setpriv", &bounding(&all), "--inh-caps=-all", "--"];
    let d = Daemon::start_wrapped(&s.net.rx_ns, &wrapper, &args, &s.dir.join("daemon.log"), &[]).unwrap();
    assert_eq!(s.ping("203.0.113.2"), 0);
    assert_eq!(s.ping("198.51.100.2"), PINGS);
    let out = s.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.stop_with(libc::SIGTERM).unwrap();
    let mut d = Daemon::start_wrapped(&s.net.rx_ns, &wrapper, &args, &s.dir.join("daemon2.log"), &[]).unwrap();
    d.wait_for_log("adopted the pinned attachment", 1).unwrap();
    assert_eq!(s.ping("203.0.113.2"), 0);
    assert_eq!(s.list_counter("deny"), 2 * u64::from(PINGS));
}

#[test]
fn logs_carry_journald_priorities_under_systemd() {
    let s = Setup::new();
    // JOURNAL_STREAM names the stream systemd connected to stderr (device:inode);
    // the daemon's log file stands in for it.
    let log = s.dir.join("journal.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let deny = format!("deny={}", s.file("deny.txt"));
    let args = s.run_args(&["--deny", &deny]);
    let mut d = Daemon::start_wrapped(&s.net.rx_ns, &[], &args, &log, &[("JOURNAL_STREAM", &stream)]).unwrap();
    std::fs::write(s.file("deny.txt"), "not-a-prefix\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for_log("reload aborted", 1).unwrap();
    let text = d.log_text();
    assert!(text.lines().any(|l| l.starts_with("<6>ready:")), "info lines carry <6>:\n{text}");
    assert!(text.lines().any(|l| l.starts_with("<3>reload aborted")), "errors carry <3>:\n{text}");
    assert!(!text.contains("INFO"), "no level words or timestamps: journald adds its own:\n{text}");
}

/// An XDP program already on the device (the test's own) is never replaced:
/// the start is refused with the kernel's errno, the id and name of the
/// program that holds the device, and what to run; it stays, and blocker
/// leaves no pins behind.
#[test]
fn a_device_another_xdp_program_holds_is_refused_with_what_to_do() {
    let s = Setup::new();
    let foreign = blocker_tests::foreign::attach_passing_xdp(&s.net.rx_ns, &s.net.rx_if).unwrap();
    let deny = format!("deny={}", s.file("deny.txt"));
    let out = s.cli(&["run", "--iface", &s.net.rx_if, "--deny", &deny, "--xdp-mode", "native"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bpf_link_create` failed: "), "the errno is named: {err}");
    assert!(
        err.contains(&format!("the device is busy: XDP program {} (test_pass) runs on it", foreign.id)),
        "the holder is named: {err}"
    );
    assert!(err.contains(&format!("bpftool net detach xdp dev {}", s.net.rx_if)), "what to run: {err}");
    let ifindex = s.net.rx_index().unwrap();
    let held = blocker_tests::http::in_netns(&s.net.rx_ns, move || blocker::dataplane::device::xdp_program_on(ifindex))
        .unwrap()
        .unwrap();
    assert_eq!(held, foreign.id, "the program that was there stays");
    let dir = blocker::dataplane::pins::iface_dir(std::path::Path::new(s.root.as_str()), &s.net.rx_if);
    assert!(!dir.join(blocker::dataplane::pins::LINK_PIN).exists(), "no link pinned");
}

/// A start logs a few lines, whatever RUST_LOG asks: the object carries no BTF
/// for the kernel to refuse (aya once logged a page of it per program load).
#[test]
fn a_start_logs_a_few_lines_even_at_rust_log_info() {
    let s = Setup::new();
    let deny = format!("deny={}", s.file("deny.txt"));
    let args = s.run_args(&["--deny", &deny, "--xdp-mode", "native"]);
    let log = s.dir.join("daemon.log");
    let d = Daemon::start_with_env(&s.net.rx_ns, &args, &log, &[("RUST_LOG", "info")]).unwrap();
    let out = s.cli(&["reload"]);
    assert!(out.status.success());
    let text = d.log_text();
    assert!(!text.contains("BTF"), "{text}");
    assert!(text.lines().count() < 25, "{} lines:\n{text}", text.lines().count());
}
