//! The outbound direction (tc egress, TCX): fixture rows through
//! BPF_PROG_TEST_RUN (frame, expected tc action, counters by direction), and
//! end to end in network namespaces: connects from the protected host to
//! denied, rejected and allowed destinations, a reload under traffic, and
//! SIGKILL of the daemon.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use aya::programs::{TestRun, TestRunOptions};
use blocker::{
    compile::table::{compile, CompiledPolicy, CompiledScope},
    dataplane::{
        maps::{DataplaneMaps, Mode, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::parse_prefix,
    policy::{ports::Ports, ListSpec, Role, DEFAULT_SCOPE, OUTBOUND_SCOPE},
};
use blocker_common::counter;
use blocker_tests::{
    daemon::PinRoot,
    frames::{Frame, Transport},
    unique_tag,
};

/// tc actions as the program returns them (TC_ACT_UNSPEC: on to the next program).
const TC_NEXT: u32 = u32::MAX;
const TC_SHOT: u32 = 2;
const TC_REDIRECT: u32 = 7;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Harness {
    maps: DataplaneMaps,
    _root: PinRoot,
}

fn spec(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
    ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
}

impl Harness {
    /// Inbound: 198.51.100.0/24 denied (by source). Outbound (by destination):
    /// 203.0.113.0/24 denied but its upper half allowed, 198.18.0.0/15 and
    /// 2001:db8:b::/48 rejected.
    fn new() -> Harness {
        let root = PinRoot::new(&format!("outbound-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        let mut maps = DataplaneMaps::load(&pins::iface_dir(&root.0, "test"), 0).expect("load the programs");
        let policy = CompiledPolicy {
            scopes: vec![
                CompiledScope {
                    name: DEFAULT_SCOPE.into(),
                    ports: Ports::default(),
                    outbound: false,
                    table: compile(&[spec("in-deny", Role::Deny, &["198.51.100.0/24"])]),
                },
                CompiledScope {
                    name: OUTBOUND_SCOPE.into(),
                    ports: Ports::default(),
                    outbound: true,
                    table: compile(&[
                        spec("out-deny", Role::Deny, &["203.0.113.0/24"]),
                        spec("out-refuse", Role::Reject, &["198.18.0.0/15", "2001:db8:b::/48"]),
                        spec("out-allow", Role::Exception, &["203.0.113.128/25"]),
                    ]),
                },
            ],
        };
        maps.apply_scopes(&policy.view(), DEFAULT_TABLE_MEMORY, None).unwrap();
        maps.set_reject_per_second(1000).unwrap();
        Harness { maps, _root: root }
    }

    /// The egress program's action and the frame it leaves.
    fn egress(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = object::egress_program_mut(self.maps.ebpf_mut().unwrap()).expect("the egress program is loaded");
        let mut out = vec![0u8; 4096];
        let r = prog
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() })
            .expect("test run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// The XDP program's action for the same frame.
    fn ingress(&mut self, frame: &[u8]) -> u32 {
        let prog = object::program_mut(self.maps.ebpf_mut().unwrap()).unwrap();
        prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run").return_value
    }
}

struct Row {
    name: &'static str,
    frame: Frame,
    /// What tc egress does (judged by destination).
    egress: u32,
    /// What XDP does with the same frame (judged by source).
    ingress: u32,
    /// The outbound counter it adds to.
    counted: u32,
}

#[test]
fn outgoing_packets_are_judged_by_destination_and_counted_as_outbound() {
    let mut h = Harness::new();
    let rows = [
        Row {
            name: "to a denied destination",
            frame: Frame::eth().ipv4("192.0.2.1").to("203.0.113.5"),
            egress: TC_SHOT,
            ingress: XDP_PASS,
            counted: counter::DROPPED,
        },
        Row {
            name: "to an allowed hole in it",
            frame: Frame::eth().ipv4("192.0.2.1").to("203.0.113.200"),
            egress: TC_NEXT,
            ingress: XDP_PASS,
            counted: counter::PASSED,
        },
        Row {
            name: "from an inbound-denied source: outbound judges the destination only",
            frame: Frame::eth().ipv4("198.51.100.7").to("192.0.2.2"),
            egress: TC_NEXT,
            ingress: XDP_DROP,
            counted: counter::PASSED,
        },
        Row {
            name: "a TCP SYN to a rejected destination",
            frame: Frame::eth().ipv4("192.0.2.1").to("198.18.0.5").transport(Transport::Tcp(443)),
            egress: TC_REDIRECT,
            ingress: XDP_PASS,
            counted: counter::REJECTED,
        },
        Row {
            name: "an IPv6 echo to a rejected destination",
            frame: Frame::eth().ipv6("2001:db8:1::1").to("2001:db8:b::5").transport(Transport::Echo),
            egress: TC_REDIRECT,
            ingress: XDP_PASS,
            counted: counter::REJECTED,
        },
        Row {
            name: "IPv6 elsewhere",
            frame: Frame::eth().ipv6("2001:db8:1::1").to("2001:db8:c::5"),
            egress: TC_NEXT,
            ingress: XDP_PASS,
            counted: counter::PASSED,
        },
        Row { name: "ARP", frame: Frame::eth().arp(), egress: TC_NEXT, ingress: XDP_PASS, counted: counter::NON_IP },
    ];
    for row in &rows {
        let frame = row.frame.build();
        let before = h.maps.counters().unwrap();
        let (action, out) = h.egress(&frame);
        let after = h.maps.counters().unwrap();
        assert_eq!(action, row.egress, "{}: egress", row.name);
        for c in 0..counter::COUNT {
            let want = u64::from(c == row.counted);
            assert_eq!(after.outbound[c as usize] - before.outbound[c as usize], want, "{}: outbound {c}", row.name);
            assert_eq!(after.global[c as usize], before.global[c as usize], "{}: no inbound count", row.name);
        }
        if row.egress == TC_REDIRECT {
            // The answer goes into this host as if from the destination.
            let l3 = 14;
            let v6 = frame[l3] >> 4 == 6;
            let (src, dst, proto) = if v6 { (8, 24, 6) } else { (12, 16, 9) };
            let len = if v6 { 16 } else { 4 };
            assert_eq!(&out[l3 + src..l3 + src + len], &frame[l3 + dst..l3 + dst + len], "{}: from it", row.name);
            assert_eq!(&out[..6], &frame[6..12], "{}: to our own MAC", row.name);
            if v6 {
                assert_eq!((out[l3 + proto], out[l3 + 40], out[l3 + 41]), (58, 1, 1), "{}: ICMPv6 1/1", row.name);
            } else {
                let tcp = &out[l3 + 20..];
                let seq = u32::from_be_bytes(frame[l3 + 24..l3 + 28].try_into().unwrap());
                let ack = u32::from_be_bytes(tcp[8..12].try_into().unwrap());
                assert_eq!((out[l3 + proto], tcp[13], ack), (6, 0x14, seq.wrapping_add(1)), "{}: RST+ACK", row.name);
            }
        }
        assert_eq!(h.ingress(&frame), row.ingress, "{}: ingress", row.name);
    }
    let c = h.maps.counters().unwrap();
    let list = |name: &str| c.lists.iter().find(|l| l.name == name).unwrap();
    assert_eq!(list("out-deny").scope, OUTBOUND_SCOPE);
    assert_eq!((list("out-deny").packets, list("out-refuse").packets, list("out-allow").packets), (1, 2, 1));
    assert_eq!(list("in-deny").packets, 1, "the inbound list counts the inbound run only");

    // Monitor mode: outbound drops are counted as monitored and passed.
    h.maps.set_mode(Mode::Monitor).unwrap();
    let before = h.maps.counters().unwrap().outbound;
    let (action, _) = h.egress(&Frame::eth().ipv4("192.0.2.1").to("203.0.113.5").build());
    assert_eq!(action, TC_NEXT);
    let after = h.maps.counters().unwrap().outbound;
    assert_eq!(after[counter::MONITORED as usize] - before[counter::MONITORED as usize], 1);
}

#[test]
fn a_table_without_outbound_lists_loads_no_egress_program() {
    let root = PinRoot::new(&format!("outbound-none-{}", unique_tag()));
    pins::ensure_bpffs(&root.0).unwrap();
    let mut maps = DataplaneMaps::load(&pins::iface_dir(&root.0, "test"), 0).unwrap();
    maps.apply(&compile(&[spec("deny", Role::Deny, &["198.51.100.0/24"])]), DEFAULT_TABLE_MEMORY).unwrap();
    assert!(object::egress_program_mut(maps.ebpf_mut().unwrap()).is_none());
    assert_eq!(maps.live_table().unwrap().outbound(), None);
}

/// In network namespaces, as users run it.
mod live {
    use std::time::{Duration, Instant};

    use blocker::control::protocol::{StatsReply, StatusReply};
    use blocker_tests::{
        daemon::{blocker_in, Daemon, PinRoot},
        netns::{Connect, NetnsPair, TX_V4, TX_V6},
        unique_tag,
    };

    const DENIED: &str = "203.0.113.2";
    const REJECTED: &str = "198.51.100.2";
    const REJECTED6: &str = "2001:db8:a::2";
    const PORT: u16 = 8080;

    struct Setup {
        net: NetnsPair,
        root: PinRoot,
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Setup {
            let net = NetnsPair::new().unwrap();
            net.serve_http_in_sender(PORT).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("deny.txt"), "203.0.113.0/24\n").unwrap();
            std::fs::write(dir.path().join("refuse.txt"), "198.51.100.0/24\n2001:db8:a::/48\n").unwrap();
            Setup { net, root: PinRoot::new(&unique_tag()), dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).to_str().unwrap().to_owned()
        }

        fn global(&self) -> Vec<String> {
            vec!["--pin-root".into(), self.root.as_str().into(), "--socket".into(), self.path("blocker.sock")]
        }

        /// The daemon with outbound lists (`policy` empty) or the given ones.
        fn start(&self, policy: &[String], log: &str) -> Daemon {
            let mut args = self.global();
            args.extend(["run", "--iface", &self.net.rx_if, "--xdp-mode", "native"].map(String::from));
            if policy.is_empty() {
                args.extend([
                    "--deny-outbound".into(),
                    format!("deny={}", self.path("deny.txt")),
                    "--reject-outbound".into(),
                    format!("refuse={}", self.path("refuse.txt")),
                ]);
            } else {
                args.extend(policy.iter().cloned());
            }
            Daemon::start(&self.net.rx_ns, &args, &self.dir.path().join(log)).unwrap()
        }

        fn cli(&self, args: &[&str]) -> std::process::Output {
            let mut all = self.global();
            all.extend(args.iter().map(|a| a.to_string()));
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            blocker_in(&self.net.rx_ns, &all).unwrap()
        }

        fn stats(&self) -> blocker::control::protocol::InterfaceStats {
            let out = self.cli(&["stats", "--json", "--iface", &self.net.rx_if]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let reply: StatsReply = serde_json::from_slice(&out.stdout).unwrap();
            reply.interfaces.into_iter().next().unwrap()
        }

        fn connect(&self, dst: &str, timeout: &str) -> (Connect, Duration) {
            let started = Instant::now();
            let c = self.net.connect_to(dst, PORT, timeout).unwrap();
            (c, started.elapsed())
        }

        /// ping's output from the protected namespace to `dst`.
        fn ping(&self, dst: &str, args: &[&str]) -> String {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", self.net.rx_ns))
                .args(["ping", "-n"])
                .args(args)
                .arg(dst)
                .output()
                .unwrap();
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        }

        /// What ping reports as received of its summary.
        fn received(out: &str) -> u32 {
            out.split(',')
                .find_map(|p| p.trim().strip_suffix(" received").and_then(|n| n.parse().ok()))
                .unwrap_or_else(|| panic!("no ping summary: {out}"))
        }

        /// Allowed, denied and rejected destinations do what they should.
        fn check_enforcing(&self) {
            assert_eq!(self.connect(TX_V4, "3").0, Connect::Answered, "an allowed destination is reached");
            let (c, took) = self.connect(REJECTED, "3");
            assert_eq!(c, Connect::Refused, "a rejected destination");
            assert!(took < Duration::from_millis(500), "refused at once, not after {took:?}");
            let (c, took) = self.connect(DENIED, "1");
            assert_eq!(c, Connect::TimedOut, "a denied destination");
            assert!(took >= Duration::from_secs(1), "a drop answers nothing: the client waits");
        }
    }

    #[test]
    fn connects_to_denied_destinations_fail_and_to_others_work() {
        let s = Setup::new();
        let _daemon = s.start(&[], "daemon.log");
        s.check_enforcing();
        assert_eq!(s.connect(TX_V6, "3").0, Connect::Answered, "IPv6 allowed");
        let (c, took) = s.connect(REJECTED6, "3");
        assert_eq!(c, Connect::Refused, "IPv6 rejected");
        assert!(took < Duration::from_millis(500));
        let out = s.ping(REJECTED, &["-c", "1", "-W", "1"]);
        assert!(out.contains("Packet filtered"), "a rejected ping gets ICMP 3/13: {out}");
        let out = s.ping(DENIED, &["-c", "1", "-W", "1"]);
        assert_eq!(Setup::received(&out), 0, "{out}");

        let stats = s.stats();
        assert_eq!(stats.outbound_here, Some(true), "the egress program is on the device here");
        assert!(stats.outbound_total(blocker_common::counter::REJECTED) >= 3, "{:?}", stats.outbound_totals);
        assert!(stats.outbound_total(blocker_common::counter::DROPPED) >= 2, "{:?}", stats.outbound_totals);
        assert!(stats.outbound_total(blocker_common::counter::PASSED) > 0);
        assert_eq!(stats.total(blocker_common::counter::REJECTED), 0, "nothing inbound was rejected");
        let refuse = stats.list("refuse").unwrap();
        assert_eq!((refuse.direction.as_str(), refuse.action.as_deref()), ("outbound", Some("reject")));

        let text = String::from_utf8_lossy(&s.cli(&["stats", "--iface", &s.net.rx_if]).stdout).into_owned();
        assert!(text.contains("outbound totals (packets): passed"), "{text}");
        assert!(text.contains("refuse (outbound)"), "{text}");
        let text = String::from_utf8_lossy(&s.cli(&["status"]).stdout).into_owned();
        assert!(text.contains("outbound: attached (tc egress, TCX), first"), "{text}");
        assert!(text.contains("list deny (outbound): drop"), "{text}");

        let out = s.cli(&["status", "--json"]);
        let status: StatusReply = serde_json::from_slice(&out.stdout).unwrap();
        let i = &status.interfaces[0];
        assert_eq!(i.outbound.as_deref(), Some("attached (tc egress, TCX), first"));
        assert!(i.enforcing);

        let out = s.cli(&["lookup", "--json", "--iface", &s.net.rx_if, DENIED]);
        let report: blocker::control::report::LookupReport = serde_json::from_slice(&out.stdout).unwrap();
        let live = &report.addresses[0].live;
        let outbound = live.iter().find(|v| v.direction == "outbound").expect("an outbound verdict");
        assert_eq!((outbound.verdict.list.as_deref(), outbound.verdict.action.as_str()), (Some("deny"), "drop"));
        assert!(outbound.attached_here);
        let inbound = live.iter().find(|v| v.direction == "inbound").expect("an inbound verdict");
        assert_eq!(inbound.verdict.action, "pass", "as a source it is in no list");
        let text = String::from_utf8_lossy(&s.cli(&["lookup", "--iface", &s.net.rx_if, DENIED]).stdout).into_owned();
        assert!(text.contains("outbound (as a destination): list deny -> drop"), "{text}");
    }

    /// Another program on the device's tc egress (the test's own, which passes
    /// every packet and so ends the chain): blocker attaches before it, so the
    /// outbound lists hold; one attached later before blocker's bypasses them,
    /// and status, stats and the metrics say so until a reload puts blocker's
    /// first again.
    #[test]
    fn another_tcx_program_on_the_egress_never_passes_packets_around_the_outbound_lists() {
        use blocker_tests::foreign::attach_passing_egress;
        let s = Setup::new();
        let _earlier = attach_passing_egress(&s.net.rx_ns, &s.net.rx_if, false).unwrap();
        let mut metrics_args = vec![
            "--deny-outbound".to_string(),
            format!("deny={}", s.path("deny.txt")),
            "--metrics-listen".into(),
            "127.0.0.1:9464".into(),
        ];
        let _daemon = s.start(&metrics_args, "daemon.log");
        metrics_args.clear();
        let out = s.ping(DENIED, &["-c", "3", "-i", "0.2", "-W", "1"]);
        assert_eq!(Setup::received(&out), 0, "blocker runs before the program that was there: {out}");
        let status =
            |s: &Setup| -> StatusReply { serde_json::from_slice(&s.cli(&["status", "--json"]).stdout).unwrap() };
        let i = status(&s).interfaces.remove(0);
        assert_eq!(i.outbound.as_deref(), Some("attached (tc egress, TCX), first"));
        assert!(i.enforcing);
        let metric = |s: &Setup| {
            let a = blocker_tests::http::request_in_netns(&s.net.rx_ns, "127.0.0.1:9464", "GET", "/metrics").unwrap();
            a.body
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("blocker_egress_programs_before{{interface=\"{}\"}} ", s.net.rx_if))
                })
                .map(str::to_owned)
        };
        assert_eq!(metric(&s).as_deref(), Some("0"));

        // A program attached later, before every other: it passes first.
        let ahead = attach_passing_egress(&s.net.rx_ns, &s.net.rx_if, true).unwrap();
        let out = s.ping(DENIED, &["-c", "3", "-i", "0.2", "-W", "1"]);
        assert_eq!(Setup::received(&out), 3, "the program ahead passes them around blocker's: {out}");
        let i = status(&s).interfaces.remove(0);
        let text = i.outbound.unwrap_or_default();
        assert!(text.starts_with("NOT FIRST") && text.contains(&format!("id {} (test_pass)", ahead.id)), "{text}");
        assert!(!i.enforcing, "not enforcing while a program runs before it");
        let stats = s.stats();
        assert_eq!(stats.outbound_ahead.iter().map(|p| p.id).collect::<Vec<_>>(), [ahead.id]);
        let text = String::from_utf8_lossy(&s.cli(&["stats", "--iface", &s.net.rx_if]).stdout).into_owned();
        assert!(text.contains("OUTBOUND NOT FIRST: 1 program(s)"), "{text}");
        assert_eq!(metric(&s).as_deref(), Some("1"));

        // A reload attaches blocker's first again.
        let out = s.cli(&["reload"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = s.ping(DENIED, &["-c", "3", "-i", "0.2", "-W", "1"]);
        assert_eq!(Setup::received(&out), 0, "first again: {out}");
        let i = status(&s).interfaces.remove(0);
        assert_eq!(i.outbound.as_deref(), Some("attached (tc egress, TCX), first"));
        assert_eq!(metric(&s).as_deref(), Some("0"));
        // The device's egress chain: blocker's, then the two others; the link
        // blocker had behind the first is off the device.
        let iface = s.net.rx_if.clone();
        let chain = blocker_tests::http::in_netns(&s.net.rx_ns, move || {
            use aya::programs::{SchedClassifier, TcAttachType};
            let (_, programs) = SchedClassifier::query_tcx(&iface, TcAttachType::Egress).unwrap();
            programs.iter().map(|p| p.name_as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>()
        })
        .unwrap();
        assert_eq!(chain, ["blocker_egress", "test_pass", "test_pass"]);
    }

    #[test]
    fn an_outbound_reload_under_traffic_is_atomic() {
        let s = Setup::new();
        let mut daemon = s.start(&[], "daemon.log");
        let spawn_ping = |dst: &str| {
            std::process::Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", s.net.rx_ns))
                .args(["ping", "-n", "-q", "-i", "0.005", "-c", "600", "-W", "1", dst])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let allowed = spawn_ping(TX_V4);
        let denied = spawn_ping(DENIED);
        // Reloads with a table that changes each time (and so a new program
        // instance on both links), while both pings run.
        let before = s.stats().program_id;
        for i in 0..8 {
            let extra = if i % 2 == 0 { "192.0.2.128/25\n" } else { "" };
            std::fs::write(s.path("refuse.txt"), format!("198.51.100.0/24\n2001:db8:a::/48\n{extra}")).unwrap();
            let out = s.cli(&["reload"]);
            assert!(out.status.success(), "reload {i}: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(250));
        }
        let output = |c: std::process::Child| {
            let o = c.wait_with_output().unwrap();
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        };
        let (allowed, denied) = (output(allowed), output(denied));
        assert_eq!(Setup::received(&allowed), 600, "no allowed packet lost across the reloads: {allowed}");
        assert_eq!(Setup::received(&denied), 0, "no denied packet passed across the reloads: {denied}");
        assert_ne!(s.stats().program_id, before, "the reloads put new programs in place");
        daemon.wait_for_log("reloading (", 8).unwrap();
        // The egress link runs the new table too: a destination the last
        // reload took out of the list is reached again.
        std::fs::write(s.path("refuse.txt"), "2001:db8:a::/48\n").unwrap();
        assert!(s.cli(&["reload"]).status.success());
        assert_eq!(s.connect(REJECTED, "3").0, Connect::Answered, "the egress program was swapped");
        assert_eq!(s.connect(REJECTED6, "3").0, Connect::Refused);
        assert!(!daemon.log_text().contains("ERROR"), "{}", daemon.log_text());
    }

    #[test]
    fn sigkill_leaves_the_egress_program_enforcing_and_a_policy_without_outbound_lists_removes_it() {
        let s = Setup::new();
        let daemon = s.start(&[], "daemon.log");
        daemon.stop_with(libc::SIGKILL).unwrap();
        s.check_enforcing();
        assert_eq!(s.stats().outbound_here, Some(true), "read from the pins, checked against the kernel");

        // A new daemon adopts it, then the same without outbound lists takes it off.
        let daemon = s.start(&[], "again.log");
        s.check_enforcing();
        daemon.stop_with(libc::SIGTERM).unwrap();
        std::fs::write(s.path("inbound.txt"), "2001:db8:b::/48\n").unwrap();
        let inbound_only = ["--deny".to_string(), format!("inbound={}", s.path("inbound.txt"))];
        let _daemon = s.start(&inbound_only, "inbound.log");
        assert_eq!(s.connect(DENIED, "2").0, Connect::Answered, "outbound is no longer judged");
        assert_eq!(s.stats().outbound_here, None, "no egress link is left");
        let out = s.cli(&["status", "--json"]);
        let status: StatusReply = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status.interfaces[0].outbound, None);
    }
}
