//! Scopes through BPF_PROG_TEST_RUN: a policy whose parts apply to chosen L4
//! protocols and destination ports. Fixture rows: the frame (source, protocol,
//! port, fragment), the verdict, the global counter and the list that counts it.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use aya::programs::{TestRun, TestRunOptions};
use blocker::{
    compile::table::{compile, CompiledTable, ScopeTable},
    dataplane::{
        maps::{Counters, DataplaneMaps, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::parse_prefix,
    policy::{
        ports::{PortRule, Ports},
        ListSpec, Role,
    },
};
use blocker_common::counter;
use blocker_tests::{
    daemon::PinRoot,
    frames::{Frame, Transport},
    unique_tag,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn list(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
    ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
}

fn ports(rules: &[&str]) -> Ports {
    Ports(rules.iter().map(|r| r.parse::<PortRule>().unwrap()).collect())
}

struct Harness {
    maps: DataplaneMaps,
    _root: PinRoot,
}

impl Harness {
    fn new(scopes: &[(&str, Ports, CompiledTable)]) -> Harness {
        let root = PinRoot::new(&format!("scopes-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        let mut maps = DataplaneMaps::load(&pins::iface_dir(&root.0, "test"), 0).expect("load XDP program");
        let view: Vec<ScopeTable<'_>> =
            scopes.iter().map(|(name, ports, table)| ScopeTable { name, ports, table, outbound: false }).collect();
        maps.apply_scopes(&view, DEFAULT_TABLE_MEMORY, None).unwrap();
        Harness { maps, _root: root }
    }

    fn run(&mut self, frame: &[u8]) -> u32 {
        let prog = object::program_mut(self.maps.ebpf_mut().unwrap()).unwrap();
        prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run").return_value
    }

    fn counters(&self) -> Counters {
        self.maps.counters().unwrap()
    }
}

struct Row {
    name: &'static str,
    frame: Frame,
    verdict: u32,
    counter: u32,
    /// (scope, list) that counts the frame.
    list: Option<(&'static str, &'static str)>,
}

fn check(h: &mut Harness, rows: &[Row]) {
    for r in rows {
        let frame = r.frame.build();
        let before = h.counters();
        let verdict = h.run(&frame);
        let after = h.counters();
        assert_eq!(verdict, r.verdict, "{}: verdict", r.name);
        for c in 0..counter::COUNT {
            let delta = after.global(c) - before.global(c);
            assert_eq!(delta, u64::from(c == r.counter), "{}: counter {}", r.name, counter::NAMES[c as usize]);
        }
        for (b, a) in before.lists.iter().zip(&after.lists) {
            let hit = r.list == Some((a.scope.as_str(), a.name.as_str()));
            assert_eq!(a.packets - b.packets, u64::from(hit), "{}: list {}/{}", r.name, a.scope, a.name);
        }
    }
}

use Transport::{Echo, Tcp, Udp};

/// An API scope (TCP 443 and 8443, UDP 443) that denies 203.0.113.0/24 but lets
/// .128/25 through; every other packet goes to the default scope, which denies
/// 198.51.100.0/24 (and 2001:db8:a::/48).
fn api_and_rest() -> Vec<(&'static str, Ports, CompiledTable)> {
    let api = compile(&[
        list("deny-api", Role::Deny, &["203.0.113.0/24", "2001:db8:b::/48"]),
        list("partners", Role::Exception, &["203.0.113.128/25"]),
    ]);
    let rest = compile(&[list("deny-rest", Role::Deny, &["198.51.100.0/24", "2001:db8:a::/48"])]);
    vec![("api", ports(&["tcp:443,8443", "udp:443"]), api), ("default", Ports::default(), rest)]
}

#[test]
fn each_packet_is_judged_by_the_first_scope_its_port_belongs_to() {
    use counter::{DROPPED, PASSED};
    let eth = Frame::eth;
    let (api_src, rest_src, partner) = ("203.0.113.5", "198.51.100.5", "203.0.113.200");
    #[rustfmt::skip]
    let rows = [
        Row { name: "api scope: tcp/443 from its deny list", frame: eth().ipv4(api_src).transport(Tcp(443)), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "api scope: tcp/8443", frame: eth().ipv4(api_src).transport(Tcp(8443)), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "api scope: udp/443", frame: eth().ipv4(api_src).transport(Udp(443)), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "api scope: its exception passes", frame: eth().ipv4(partner).transport(Tcp(443)), verdict: XDP_PASS, counter: PASSED, list: Some(("api", "partners")) },
        Row { name: "api scope: the default's deny list does not apply", frame: eth().ipv4(rest_src).transport(Tcp(443)), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "default scope: tcp/22 from the api's deny list passes", frame: eth().ipv4(api_src).transport(Tcp(22)), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "default scope: udp/443's neighbour udp/444", frame: eth().ipv4(api_src).transport(Udp(444)), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "default scope: tcp/22 from its own deny list", frame: eth().ipv4(rest_src).transport(Tcp(22)), verdict: XDP_DROP, counter: DROPPED, list: Some(("default", "deny-rest")) },
        Row { name: "default scope: icmp (no ports)", frame: eth().ipv4(rest_src).transport(Echo), verdict: XDP_DROP, counter: DROPPED, list: Some(("default", "deny-rest")) },
        Row { name: "default scope: icmp from the api's list", frame: eth().ipv4(api_src).transport(Echo), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "ipv4 options before the port (IHL honoured)", frame: eth().ipv4(api_src).options(4).transport(Tcp(443)), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "later tcp fragment stays in the api scope", frame: eth().ipv4(api_src).fragment(100).transport(Tcp(22)), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "a later tcp fragment is judged by the default scope too", frame: eth().ipv4(rest_src).fragment(100).transport(Tcp(443)), verdict: XDP_DROP, counter: DROPPED, list: Some(("default", "deny-rest")) },
        Row { name: "a later tcp fragment from the api's exception: the default scope has nothing", frame: eth().ipv4(partner).fragment(100).transport(Tcp(443)), verdict: XDP_PASS, counter: PASSED, list: Some(("api", "partners")) },
        Row { name: "ipv4 AH hides the port: every scope judges", frame: eth().ipv4(rest_src).transport(Tcp(443)).protocol(51), verdict: XDP_DROP, counter: DROPPED, list: Some(("default", "deny-rest")) },
        Row { name: "tcp header cut before the port: in the api scope", frame: eth().ipv4(api_src).transport(Tcp(22)).truncate(14 + 20 + 2), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "ipv6 tcp/443 behind extension headers", frame: eth().ipv6("2001:db8:b::5").ext_headers(&[0, 60]).transport(Tcp(443)), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "ipv6 tcp/22: the default scope", frame: eth().ipv6("2001:db8:b::5").transport(Tcp(22)), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "ipv6 later fragment of udp: in the api scope", frame: eth().ipv6("2001:db8:b::5").fragment(7).transport(Udp(53)), verdict: XDP_DROP, counter: DROPPED, list: Some(("api", "deny-api")) },
        Row { name: "ipv6 default scope deny", frame: eth().ipv6("2001:db8:a::9").transport(Udp(53)), verdict: XDP_DROP, counter: DROPPED, list: Some(("default", "deny-rest")) },
    ];
    let mut h = Harness::new(&api_and_rest());
    check(&mut h, &rows);
}

/// Chains of 0 to 10 IPv6 extension headers of each kind before a TCP SYN: the
/// program walks 6; behind more, the port cannot be read, and the packet is
/// judged as in scope for every scope that could hold it, never passed.
#[test]
fn extension_header_chains_past_the_walk_stay_in_scope() {
    use counter::{DROPPED, PASSED, REJECTED};
    const WALKED: usize = 6;
    let src = "2001:db8:b::5";
    let deny = || compile(&[list("deny", Role::Deny, &["2001:db8:b::/48"])]);
    let refuse = || compile(&[list("refuse", Role::Reject, &["2001:db8:b::/48"])]);
    /// A policy of one scope, a port it takes and one it does not, and what
    /// the scope's list does.
    struct Case {
        policy: &'static str,
        scope: (&'static str, Ports, CompiledTable),
        inside: u16,
        outside: u16,
        verdict: u32,
        counter: u32,
        list: &'static str,
    }
    #[rustfmt::skip]
    let cases = [
        Case { policy: "--ports tcp:443", scope: ("default", ports(&["tcp:443"]), deny()), inside: 443, outside: 22, verdict: XDP_DROP, counter: DROPPED, list: "deny" },
        Case { policy: "a [[scope]] reject list", scope: ("api", ports(&["tcp:443"]), refuse()), inside: 443, outside: 80, verdict: 3, counter: REJECTED, list: "refuse" },
        Case { policy: "tcp:all-except:22", scope: ("web", ports(&["tcp:all-except:22"]), deny()), inside: 80, outside: 22, verdict: XDP_DROP, counter: DROPPED, list: "deny" },
    ];
    for Case { policy, scope, inside, outside, verdict, counter, list: list_name } in cases {
        let scopes = vec![scope];
        let mut h = Harness::new(&scopes);
        h.maps.set_reject_per_second(1_000_000).unwrap();
        let scope = scopes[0].0;
        for kind in [0u8, 43, 60, 44, 51] {
            for n in 0..=10usize {
                let chain = vec![kind; n];
                let frame = |port| Frame::eth().ipv6(src).ext_headers(&chain).transport(Tcp(port)).build();
                let name = format!("{policy}: {n} headers of type {kind}");
                let rows = [
                    (inside, verdict, counter, Some((scope, list_name))),
                    // Outside the scope, unless the port cannot be read.
                    if n <= WALKED {
                        (outside, XDP_PASS, PASSED, None)
                    } else {
                        (outside, verdict, counter, Some((scope, list_name)))
                    },
                ];
                for (port, want_verdict, want_counter, want_list) in rows {
                    let before = h.counters();
                    let got = h.run(&frame(port));
                    let after = h.counters();
                    assert_eq!(got, want_verdict, "{name}, port {port}: verdict");
                    for c in 0..counter::COUNT {
                        let delta = after.global(c) - before.global(c);
                        assert_eq!(delta, u64::from(c == want_counter), "{name}, port {port}: counter {c}");
                    }
                    for (b, a) in before.lists.iter().zip(&after.lists) {
                        let hit = want_list == Some((a.scope.as_str(), a.name.as_str()));
                        assert_eq!(a.packets - b.packets, u64::from(hit), "{name}, port {port}: list {}", a.name);
                    }
                }
            }
        }
    }
}

/// With several scopes, a packet whose port cannot be read takes the strictest
/// verdict of every scope that could hold it: a drop in one beats an exception
/// in another; with no list anywhere, it passes.
#[test]
fn a_packet_without_a_port_takes_the_strictest_verdict_of_its_scopes() {
    use counter::{DROPPED, MONITORED, PASSED};
    let eth = Frame::eth;
    let api = compile(&[
        list("partners", Role::Exception, &["2001:db8:c::/48"]),
        list("watch", Role::Monitor, &["2001:db8:d::/48"]),
    ]);
    let dns = compile(&[list("deny-dns", Role::Deny, &["2001:db8:c::/48"])]);
    let rest = compile(&[list("watch-rest", Role::Monitor, &["2001:db8:e::/48"])]);
    let scopes =
        vec![("api", ports(&["tcp:443"]), api), ("dns", ports(&["udp:53"]), dns), ("default", Ports::default(), rest)];
    let deep = [60u8; 8];
    #[rustfmt::skip]
    let rows = [
        Row { name: "with its port: the api's exception", frame: eth().ipv6("2001:db8:c::1").transport(Tcp(443)), verdict: XDP_PASS, counter: PASSED, list: Some(("api", "partners")) },
        Row { name: "past the walk: the dns scope's deny wins", frame: eth().ipv6("2001:db8:c::1").ext_headers(&deep).transport(Tcp(443)), verdict: XDP_DROP, counter: DROPPED, list: Some(("dns", "deny-dns")) },
        Row { name: "a later tcp fragment: api and default, the exception", frame: eth().ipv6("2001:db8:c::1").fragment(9).transport(Tcp(443)), verdict: XDP_PASS, counter: PASSED, list: Some(("api", "partners")) },
        Row { name: "a later udp fragment: dns and default, the deny", frame: eth().ipv6("2001:db8:c::1").fragment(9).transport(Udp(53)), verdict: XDP_DROP, counter: DROPPED, list: Some(("dns", "deny-dns")) },
        Row { name: "past the walk: monitor over nothing", frame: eth().ipv6("2001:db8:d::1").ext_headers(&deep).transport(Udp(9)), verdict: XDP_PASS, counter: MONITORED, list: Some(("api", "watch")) },
        Row { name: "past the walk: the default's monitor list", frame: eth().ipv6("2001:db8:e::1").ext_headers(&deep).transport(Udp(9)), verdict: XDP_PASS, counter: MONITORED, list: Some(("default", "watch-rest")) },
        Row { name: "past the walk, in no list: passes", frame: eth().ipv6("2001:db8:f::1").ext_headers(&deep).transport(Tcp(443)), verdict: XDP_PASS, counter: PASSED, list: None },
    ];
    let mut h = Harness::new(&scopes);
    check(&mut h, &rows);
}

#[test]
fn traffic_outside_every_scope_passes_and_counts_as_passed() {
    use counter::{DROPPED, PASSED};
    let eth = Frame::eth;
    // Only SSH is spared: the deny list applies to all TCP but port 22, and to
    // nothing else.
    let table = compile(&[list("deny", Role::Deny, &["203.0.113.0/24"])]);
    let mut h = Harness::new(&[("web", ports(&["tcp:all-except:22"]), table)]);
    #[rustfmt::skip]
    let rows = [
        Row { name: "tcp/80", frame: eth().ipv4("203.0.113.5").transport(Tcp(80)), verdict: XDP_DROP, counter: DROPPED, list: Some(("web", "deny")) },
        Row { name: "tcp/22 is excepted", frame: eth().ipv4("203.0.113.5").transport(Tcp(22)), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "udp is outside", frame: eth().ipv4("203.0.113.5").transport(Udp(80)), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "icmp is outside", frame: eth().ipv4("203.0.113.5").transport(Echo), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "a later tcp fragment is inside", frame: eth().ipv4("203.0.113.5").fragment(3).transport(Tcp(22)), verdict: XDP_DROP, counter: DROPPED, list: Some(("web", "deny")) },
    ];
    check(&mut h, &rows);
}

#[test]
fn the_same_list_in_two_scopes_counts_apart_and_the_live_table_answers_per_scope() {
    let deny = || compile(&[list("country:XX", Role::Deny, &["203.0.113.0/24"])]);
    let scopes = vec![("a", ports(&["tcp:443"]), deny()), ("b", ports(&["udp:53"]), deny())];
    let mut h = Harness::new(&scopes);
    assert_eq!(h.run(&Frame::eth().ipv4("203.0.113.5").transport(Tcp(443)).build()), XDP_DROP);
    for _ in 0..2 {
        assert_eq!(h.run(&Frame::eth().ipv4("203.0.113.5").transport(Udp(53)).build()), XDP_DROP);
    }
    let c = h.counters();
    let count = |scope: &str| c.lists.iter().find(|l| l.scope == scope && l.name == "country:XX").unwrap().packets;
    assert_eq!((count("a"), count("b")), (1, 2));
    let live = h.maps.live_table().unwrap();
    assert_eq!(live.scopes(), ["a", "b"]);
    assert_eq!(live.scope_for(6, Some(443)), Some(0));
    assert_eq!(live.scope_for(17, Some(53)), Some(1));
    assert_eq!(live.scope_for(6, Some(80)), None, "no scope takes it");
    let addr = u128::from(u32::from(std::net::Ipv4Addr::new(203, 0, 113, 5)));
    for scope in 0..2 {
        let (id, _) = live.lookup_in(scope, blocker::net::Family::V4, addr).expect("a hit");
        assert_eq!(c.lists.iter().find(|l| l.id == id).unwrap().scope, ["a", "b"][scope as usize]);
    }
}

mod end_to_end {
    //! A daemon with a scope, real TCP connections and pings between the test's
    //! namespaces.
    use blocker::control::{
        protocol::{StatsReply, StatusReply},
        report::{ConfigReport, LookupReport},
    };
    use blocker_tests::{
        daemon::{blocker_in, Daemon, PinRoot},
        netns::{Connect, NetnsPair},
        unique_tag,
    };

    const DENIED: &str = "203.0.113.2";
    const OTHER: &str = "198.51.100.2";

    #[test]
    fn a_scope_blocks_its_ports_only_and_every_report_shows_it() {
        let net = NetnsPair::new().unwrap();
        let root = PinRoot::new(&unique_tag());
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        std::fs::write(path("deny.txt"), "203.0.113.0/24\n2001:db8:b::/48\n").unwrap();
        let config = path("blocker.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\npin_root = \"{}\"\nsocket = \"{}\"\n[[interface]]\nname = \"{}\"\nxdp_mode = \
                 \"native\"\n[policy]\nnever_block = [\"192.0.2.0/24\"]\n[[scope]]\nname = \"api\"\nports = \
                 [\"tcp:8443\"]\ndeny = [\"deny={}\"]\n",
                root.as_str(),
                path("blocker.sock"),
                net.rx_if,
                path("deny.txt")
            ),
        )
        .unwrap();
        let out = blocker_in(&net.rx_ns, &["check-config", "--config", &config]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("scope api (tried 1st): tcp:8443\nother traffic: passes"), "{text}");
        assert!(text.contains("list deny (scope api): drop -> 1 IPv4 + 1 IPv6 ranges"), "{text}");
        let out = blocker_in(&net.rx_ns, &["check-config", "--config", &config, "--json"]).unwrap();
        let report: ConfigReport = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((report.scopes.len(), report.scopes[0].name.as_str()), (1, "api"));

        let _daemon = Daemon::start(&net.rx_ns, &["run", "--config", &config], &dir.path().join("daemon.log")).unwrap();
        net.serve_http(8443).unwrap();
        net.serve_http(8080).unwrap();
        assert_eq!(net.connect_from(DENIED, 8443, "1").unwrap(), Connect::TimedOut, "dropped in scope");
        assert_eq!(net.connect_from(DENIED, 8080, "2").unwrap(), Connect::Answered, "another port passes");
        assert_eq!(net.connect_from(OTHER, 8443, "2").unwrap(), Connect::Answered, "another source passes");
        assert_eq!(net.connect_from("2001:db8:b::2", 8443, "1").unwrap(), Connect::TimedOut, "IPv6 too");
        assert_eq!(net.ping_from(DENIED, 2).unwrap(), 2, "ICMP is outside the scope");

        let socket = path("blocker.sock");
        let cli = |args: &[&str]| {
            let mut full = vec!["--pin-root", root.as_str(), "--socket", &socket];
            full.extend(args);
            let out = blocker_in(&net.rx_ns, &full).unwrap();
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        let status: StatusReply = serde_json::from_slice(&cli(&["status", "--json"])).unwrap();
        assert_eq!(status.scopes.len(), 1);
        assert_eq!((status.scopes[0].name.as_str(), status.scopes[0].ports.as_str()), ("api", "tcp:8443"));
        let stats: StatsReply = serde_json::from_slice(&cli(&["stats", "--json"])).unwrap();
        let deny = stats.interfaces[0].lists.iter().find(|l| l.name == "deny").unwrap();
        assert_eq!(deny.scope, "api");
        assert!(deny.packets >= 2, "the SYNs (and their retries) count under the scope's list: {deny:?}");
        let lookup: LookupReport = serde_json::from_slice(&cli(&["lookup", DENIED, "--json"])).unwrap();
        let live = &lookup.addresses[0].live;
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].scope.as_str(), live[0].verdict.list.as_deref()), ("api", Some("deny")));
        let text = String::from_utf8_lossy(&cli(&["lookup", DENIED])).into_owned();
        assert!(text.contains(&format!("live on {}, scope api: list deny -> drop", net.rx_if)), "{text}");
    }

    /// A denied source's SYN to the scoped port behind 0 to 10 IPv6
    /// destination-options headers, sent as real frames: none reaches the
    /// stack (its TCP segment count stands still), while the same frames from
    /// an unlisted source do.
    #[test]
    fn a_long_extension_header_chain_does_not_pass_a_port_scoped_deny() {
        use blocker_tests::frames::{Frame, Transport};
        let net = NetnsPair::new().unwrap();
        let root = PinRoot::new(&unique_tag());
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        std::fs::write(path("deny.txt"), "2001:db8:b::/48\n").unwrap();
        let deny = format!("deny={}", path("deny.txt"));
        let socket = path("blocker.sock");
        let args = ["--pin-root", root.as_str(), "--socket", &socket, "run", "--iface", &net.rx_if];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["--xdp-mode", "native", "--deny", &deny, "--ports", "tcp:443", "--no-default-never-block"]);
        let _daemon = Daemon::start(&net.rx_ns, &args, &dir.path().join("daemon.log")).unwrap();
        let frames = |src: &str| -> Vec<Vec<u8>> {
            (0..=10)
                .map(|n| Frame::eth().ipv6(src).ext_headers(&vec![60; n]).transport(Transport::Tcp(443)).build())
                .collect()
        };
        let stats = || {
            let out =
                blocker_in(&net.rx_ns, &["--pin-root", root.as_str(), "--socket", &socket, "stats", "--json"]).unwrap();
            let reply: StatsReply = serde_json::from_slice(&out.stdout).unwrap();
            reply.interfaces.into_iter().next().unwrap()
        };
        let segments = || net.rx_snmp("Tcp", "InSegs").unwrap();
        let (before, segs) = (stats(), segments());
        net.send_raw(&frames("2001:db8:b::2"), false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = stats();
        assert_eq!(segments(), segs, "no segment from the denied source reached TCP");
        let delta = |c| after.total(c) - before.total(c);
        assert_eq!(delta(blocker_common::counter::DROPPED), 11, "all 11 dropped: {:?}", after.totals);
        let deny = |s: &blocker::control::protocol::InterfaceStats| s.list("deny").map_or(0, |l| l.packets);
        assert_eq!(deny(&after) - deny(&before), 11);
        // The same frames from a source no list holds reach the stack.
        net.send_raw(&frames("2001:db8:1::2"), false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(segments() - segs, 11, "the unlisted source's segments arrive");
    }
}
