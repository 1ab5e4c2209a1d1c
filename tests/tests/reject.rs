//! Reject through BPF_PROG_TEST_RUN: the answer the XDP program builds for each
//! kind of packet from a reject list (fixture rows: frame, XDP action, what the
//! answer must be), checked field by field with its checksums; what is never
//! answered; the rate limit.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use aya::programs::{TestRun, TestRunOptions};
use blocker::{
    compile::table::compile,
    dataplane::{
        maps::{Counters, DataplaneMaps, Mode, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::parse_prefix,
    policy::{ListSpec, Role},
};
use blocker_common::counter;
use blocker_tests::{
    daemon::PinRoot,
    frames::{Frame, Transport, ETH_P_8021Q},
    unique_tag,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const R4: &str = "203.0.113.5";
const BROADCAST: [u8; 6] = [0xff; 6];
const R6: &str = "2001:db8:b::5";

struct Harness {
    maps: DataplaneMaps,
    _root: PinRoot,
}

impl Harness {
    fn new(per_second: u32) -> Harness {
        let root = PinRoot::new(&format!("reject-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        let mut maps = DataplaneMaps::load(&pins::iface_dir(&root.0, "test"), 0).expect("load XDP program");
        let p = |s: &str| parse_prefix(s).unwrap();
        let lists = [
            ListSpec {
                name: "refuse".into(),
                role: Role::Reject,
                prefixes: vec![
                    p("203.0.113.0/24"),
                    p("2001:db8:b::/48"),
                    // Sources of no single host, to show they get no answer.
                    p("0.0.0.0/8"),
                    p("224.0.0.0/3"),
                    p("::/127"),
                    p("ff00::/8"),
                ],
            },
            ListSpec { name: "deny".into(), role: Role::Deny, prefixes: vec![p("198.51.100.0/24")] },
        ];
        maps.apply(&compile(&lists), DEFAULT_TABLE_MEMORY).unwrap();
        maps.set_reject_per_second(per_second).unwrap();
        Harness { maps, _root: root }
    }

    /// The program's action and the frame it leaves.
    fn run(&mut self, frame: &[u8], repeat: u32) -> (u32, Vec<u8>) {
        let prog = object::program_mut(self.maps.ebpf_mut().unwrap()).unwrap();
        let mut out = vec![0u8; 4096];
        let r = prog
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..Default::default() })
            .expect("test run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn counters(&self) -> Counters {
        self.maps.counters().unwrap()
    }
}

/// The Internet checksum of `bytes` (0 over data that holds its own checksum).
fn sum(parts: &[&[u8]]) -> u16 {
    let mut s: u32 = 0;
    let bytes: Vec<u8> = parts.concat();
    for pair in bytes.chunks(2) {
        s += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What an answer must be.
#[derive(Debug)]
enum Answer {
    /// A RST with these flags, sequence and acknowledgement numbers.
    Rst { flags: u8, seq: u32, ack: u32 },
    /// ICMP(v6) destination unreachable with this code, quoting the first bytes
    /// of the packet's IP header.
    Unreachable { code: u8 },
}

/// Checks the answer `out` to `frame` (whose IP header starts at `l3`): the
/// link layer turned round, the IP header from the packet's destination back
/// to its source, every checksum valid.
fn check_answer(name: &str, frame: &[u8], out: &[u8], l3: usize, want: &Answer) {
    assert_eq!(&out[..6], &frame[6..12], "{name}: to the sender's MAC");
    assert_eq!(&out[6..12], &frame[..6], "{name}: from ours");
    assert_eq!(&out[12..l3], &frame[12..l3], "{name}: VLAN tags and EtherType kept");
    let v6 = frame[l3] >> 4 == 6;
    let ip = &out[l3..];
    let (l4, proto, pseudo) = if v6 {
        assert_eq!(&ip[8..24], &frame[l3 + 24..l3 + 40], "{name}: from the packet's destination");
        assert_eq!(&ip[24..40], &frame[l3 + 8..l3 + 24], "{name}: to its source");
        assert_eq!(be16(ip, 4) as usize, ip.len() - 40, "{name}: payload length");
        let len = (ip.len() - 40) as u32;
        let mut pseudo = ip[8..40].to_vec();
        pseudo.extend_from_slice(&len.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, ip[6]]);
        (&ip[40..], ip[6], pseudo)
    } else {
        assert_eq!(ip[0], 0x45, "{name}: a 20-byte IPv4 header");
        assert_eq!(&ip[12..16], &frame[l3 + 16..l3 + 20], "{name}: from the packet's destination");
        assert_eq!(&ip[16..20], &frame[l3 + 12..l3 + 16], "{name}: to its source");
        assert_eq!(be16(ip, 2) as usize, ip.len(), "{name}: total length");
        assert_eq!(sum(&[&ip[..20]]), 0, "{name}: IPv4 header checksum");
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, ip[9]]);
        pseudo.extend_from_slice(&((ip.len() - 20) as u16).to_be_bytes());
        (&ip[20..], ip[9], pseudo)
    };
    match want {
        Answer::Rst { flags, seq, ack } => {
            assert_eq!(proto, 6, "{name}: TCP");
            assert_eq!(l4.len(), 20, "{name}: a bare TCP header");
            assert_eq!((l4[13], be32(l4, 4), be32(l4, 8)), (*flags, *seq, *ack), "{name}: flags, seq, ack");
            assert_eq!(sum(&[&pseudo, l4]), 0, "{name}: TCP checksum");
        }
        Answer::Unreachable { code } => {
            let (icmp_proto, icmp_type) = if v6 { (58, 1) } else { (1, 3) };
            assert_eq!((proto, l4[0], l4[1]), (icmp_proto, icmp_type, *code), "{name}: type and code");
            let quote = &l4[8..];
            let want_len = if v6 { 48 } else { 28 };
            assert_eq!(quote, &frame[l3..l3 + want_len], "{name}: the packet's header quoted");
            let check = if v6 { sum(&[&pseudo, l4]) } else { sum(&[l4]) };
            assert_eq!(check, 0, "{name}: ICMP checksum");
        }
    }
}

struct Row {
    name: &'static str,
    frame: Frame,
    /// None: dropped without an answer.
    answer: Option<Answer>,
}

/// A TCP segment from `src` with `flags`, sequence 1000, acknowledgement 5000
/// and `payload` bytes.
fn tcp_frame(v6: bool, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = if v6 { Frame::eth().ipv6(R6) } else { Frame::eth().ipv4(R4) }.transport(Transport::Tcp(443)).build();
    let l3 = 14;
    let l4 = l3 + if v6 { 40 } else { 20 };
    f[l4 + 4..l4 + 8].copy_from_slice(&1000u32.to_be_bytes());
    f[l4 + 8..l4 + 12].copy_from_slice(&5000u32.to_be_bytes());
    f[l4 + 13] = flags;
    f.truncate(l4 + 20);
    f.extend(std::iter::repeat_n(0x61, payload));
    let total = f.len() - l3;
    if v6 {
        f[l3 + 4..l3 + 6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        f[l3 + 2..l3 + 4].copy_from_slice(&(total as u16).to_be_bytes());
        f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = blocker_common::wire::ipv4_checksum(&f[l3..l3 + 20]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    f
}

#[test]
fn tcp_segments_get_a_rst_that_acknowledges_what_they_carried() {
    let mut h = Harness::new(1000);
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    const FIN: u8 = 0x01;
    for v6 in [false, true] {
        for (name, flags, payload, want) in [
            ("SYN", SYN, 0, Answer::Rst { flags: 0x14, seq: 0, ack: 1001 }),
            ("data with ACK", ACK | PSH, 100, Answer::Rst { flags: 0x04, seq: 5000, ack: 0 }),
            ("data and FIN without ACK", PSH | FIN, 10, Answer::Rst { flags: 0x14, seq: 0, ack: 1011 }),
        ] {
            let frame = tcp_frame(v6, flags, payload);
            let before = h.counters();
            let (action, out) = h.run(&frame, 1);
            let name = format!("{name} (IPv{})", if v6 { 6 } else { 4 });
            assert_eq!(action, XDP_TX, "{name}");
            check_answer(&name, &frame, &out, 14, &want);
            // Ports turned round.
            let (l4_in, l4_out) = (14 + if v6 { 40 } else { 20 }, 14 + if v6 { 40 } else { 20 });
            assert_eq!(&out[l4_out..l4_out + 2], &frame[l4_in + 2..l4_in + 4], "{name}: from port 443");
            assert_eq!(&out[l4_out + 2..l4_out + 4], &frame[l4_in..l4_in + 2], "{name}: to its port");
            let after = h.counters();
            assert_eq!(after.global(counter::REJECTED) - before.global(counter::REJECTED), 1, "{name}");
            assert_eq!(after.list("refuse").unwrap().packets - before.list("refuse").unwrap().packets, 1);
        }
    }
}

#[test]
fn other_packets_get_icmp_administratively_prohibited_and_errors_get_nothing() {
    let eth = Frame::eth;
    use Transport::{Echo, Tcp, Udp};
    let unreachable = |code| Some(Answer::Unreachable { code });
    #[rustfmt::skip]
    let rows = [
        Row { name: "ipv4 udp", frame: eth().ipv4(R4).transport(Udp(53)), answer: unreachable(13) },
        Row { name: "ipv4 ping", frame: eth().ipv4(R4).transport(Echo), answer: unreachable(13) },
        Row { name: "ipv4 udp under 802.1Q", frame: eth().vlan(ETH_P_8021Q, 9).ipv4(R4).transport(Udp(53)), answer: unreachable(13) },
        Row { name: "ipv6 udp", frame: eth().ipv6(R6).transport(Udp(53)), answer: unreachable(1) },
        Row { name: "ipv6 ping", frame: eth().ipv6(R6).transport(Echo), answer: unreachable(1) },
        Row { name: "ipv6 tcp behind extension headers", frame: eth().ipv6(R6).ext_headers(&[0]).transport(Tcp(443)), answer: Some(Answer::Rst { flags: 0x14, seq: 0, ack: 1 }) },
        Row { name: "ipv4 later fragment: never answered", frame: eth().ipv4(R4).fragment(10).transport(Udp(53)), answer: None },
        Row { name: "ipv6 later fragment: never answered", frame: eth().ipv6(R6).fragment(10).transport(Udp(53)), answer: None },
        Row { name: "ipv4 options: not answered", frame: eth().ipv4(R4).options(2).transport(Udp(53)), answer: None },
        Row { name: "ipv4 too short to quote", frame: eth().ipv4(R4).transport(Udp(53)).truncate(14 + 24), answer: None },
        // RFC 1122 3.2.2 and RFC 4443 2.4: nothing sent to a group, nor from an
        // address of no single host, is answered (one spoofed packet would get
        // an answer from every host of the LAN, from a group address).
        Row { name: "ipv4 to 255.255.255.255", frame: eth().mac_to(BROADCAST).ipv4(R4).to("255.255.255.255").transport(Udp(53)), answer: None },
        Row { name: "ipv4 to the subnet's broadcast (link-layer broadcast)", frame: eth().mac_to(BROADCAST).ipv4(R4).to("192.0.2.255").transport(Udp(53)), answer: None },
        Row { name: "ipv4 to 224.0.0.1", frame: eth().mac_to([0x01, 0, 0x5e, 0, 0, 1]).ipv4(R4).to("224.0.0.1").transport(Udp(53)), answer: None },
        Row { name: "ipv4 to 224.0.0.1 in a unicast frame", frame: eth().ipv4(R4).to("224.0.0.1").transport(Udp(53)), answer: None },
        Row { name: "ipv4 to 255.255.255.255 in a unicast frame", frame: eth().ipv4(R4).to("255.255.255.255").transport(Echo), answer: None },
        Row { name: "ipv4 to 240.0.0.1 (class E)", frame: eth().ipv4(R4).to("240.0.0.1").transport(Udp(53)), answer: None },
        Row { name: "ipv4 tcp to a link-layer broadcast", frame: eth().mac_to(BROADCAST).ipv4(R4).transport(Tcp(443)), answer: None },
        Row { name: "ipv4 from a group MAC", frame: eth().mac_from([0x01, 0, 0x5e, 0, 0, 1]).ipv4(R4).transport(Udp(53)), answer: None },
        Row { name: "ipv6 to ff02::1", frame: eth().mac_to([0x33, 0x33, 0, 0, 0, 1]).ipv6(R6).to("ff02::1").transport(Udp(53)), answer: None },
        Row { name: "ipv6 to ff02::1 in a unicast frame", frame: eth().ipv6(R6).to("ff02::1").transport(Echo), answer: None },
        Row { name: "ipv6 tcp to ff05::2", frame: eth().ipv6(R6).to("ff05::2").transport(Tcp(443)), answer: None },
        Row { name: "ipv6 to a link-layer broadcast", frame: eth().mac_to(BROADCAST).ipv6(R6).transport(Udp(53)), answer: None },
        Row { name: "ipv4 from 224.0.0.5", frame: eth().ipv4("224.0.0.5").transport(Udp(53)), answer: None },
        Row { name: "ipv4 from 255.255.255.255", frame: eth().ipv4("255.255.255.255").transport(Tcp(443)), answer: None },
        Row { name: "ipv4 from 0.0.0.0", frame: eth().ipv4("0.0.0.0").transport(Echo), answer: None },
        Row { name: "ipv6 from ff02::1", frame: eth().ipv6("ff02::1").transport(Udp(53)), answer: None },
        Row { name: "ipv6 from ::", frame: eth().ipv6("::").transport(Tcp(443)), answer: None },
        Row { name: "ipv6 from ::1", frame: eth().ipv6("::1").transport(Echo), answer: None },
        // Next to them, single hosts are answered.
        Row { name: "ipv4 to 223.255.255.254", frame: eth().ipv4("203.0.113.255").to("223.255.255.254").transport(Udp(53)), answer: unreachable(13) },
        Row { name: "ipv6 to fe80::1", frame: eth().ipv6(R6).to("fe80::1").transport(Udp(53)), answer: unreachable(1) },
    ];
    let mut h = Harness::new(1000);
    for r in &rows {
        let frame = r.frame.build();
        let before = h.counters();
        let (action, out) = h.run(&frame, 1);
        let after = h.counters();
        let delta = |c| after.global(c) - before.global(c);
        match &r.answer {
            Some(want) => {
                assert_eq!(action, XDP_TX, "{}", r.name);
                check_answer(r.name, &frame, &out, r.frame.l3_offset(), want);
                assert_eq!((delta(counter::REJECTED), delta(counter::DROPPED)), (1, 0), "{}", r.name);
            }
            None => {
                assert_eq!(action, XDP_DROP, "{}", r.name);
                assert_eq!((delta(counter::REJECTED), delta(counter::DROPPED)), (0, 1), "{}", r.name);
            }
        }
    }
    // ICMP errors and RSTs from a rejected source are never answered.
    let mut error = eth().ipv4(R4).transport(Echo).build();
    error[14 + 20] = 3; // destination unreachable
    let mut error6 = eth().ipv6(R6).transport(Echo).build();
    error6[14 + 40] = 1;
    let rst = tcp_frame(false, 0x04, 0);
    for (name, frame) in [("icmp error", error), ("icmpv6 error", error6), ("rst", rst)] {
        assert_eq!(h.run(&frame, 1).0, XDP_DROP, "{name}");
    }
    // A deny list drops without an answer, as before.
    assert_eq!(h.run(&eth().ipv4("198.51.100.5").transport(Tcp(443)).build(), 1).0, XDP_DROP);
}

#[test]
fn answers_keep_to_the_rate_and_monitor_mode_answers_nothing() {
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    // Ten answers a second per CPU: a burst of ten on the CPU the test runs on.
    let mut h = Harness::new(10 * cpus);
    let syn = tcp_frame(false, 0x02, 0);
    // One CPU's bucket: the test runs on CPU 0 only. Each run starts from the
    // frame again (a repeat would run on the answer of the run before).
    // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
    let before = h.counters();
    for _ in 0..200 {
        h.run(&syn, 1);
    }
    let after = h.counters();
    let delta = |c| after.global(c) - before.global(c);
    assert!((10..=11).contains(&delta(counter::REJECTED)), "{} answers", delta(counter::REJECTED));
    assert_eq!(delta(counter::REJECTED) + delta(counter::DROPPED), 200, "the rest dropped unanswered");
    // 0: no answers at all.
    h.maps.set_reject_per_second(0).unwrap();
    assert_eq!(h.run(&syn, 1).0, XDP_DROP);
    // Monitor mode: counted as monitored, passed, not answered.
    h.maps.set_reject_per_second(1000).unwrap();
    h.maps.set_mode(Mode::Monitor).unwrap();
    let before = h.counters();
    let (action, out) = h.run(&syn, 1);
    assert_eq!((action, out), (XDP_PASS, syn.clone()), "passed as it came");
    assert_eq!(h.counters().global(counter::MONITORED) - before.global(counter::MONITORED), 1);
}

mod end_to_end {
    //! A daemon that rejects, real TCP connections and pings between the test's
    //! namespaces.
    use std::time::{Duration, Instant};

    use blocker::control::protocol::StatsReply;
    use blocker_tests::{
        daemon::{blocker_in, Daemon, PinRoot},
        netns::{Connect, NetnsPair},
        unique_tag,
    };

    const REJECTED: &str = "203.0.113.2";
    const REJECTED6: &str = "2001:db8:b::2";
    const DENIED: &str = "198.51.100.2";

    /// An XDP program on the sender's veth, for as long as it lives: a veth
    /// takes the XDP_TX frames its peer sends back only when it runs XDP itself
    /// (a NIC needs nothing of the kind). blocker's own program with an empty
    /// table, which passes everything, in a thread inside the sender's namespace.
    struct SenderXdp {
        stop: Option<std::sync::mpsc::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
        _root: PinRoot,
    }

    impl SenderXdp {
        fn attach(net: &NetnsPair) -> SenderXdp {
            use std::os::fd::AsRawFd as _;
            let root = PinRoot::new(&format!("sender-{}", unique_tag()));
            let dir = blocker::dataplane::pins::iface_dir(&root.0, "sender");
            let ns = std::fs::File::open(format!("/run/netns/{}", net.tx_ns)).unwrap();
            let iface = net.tx_if.clone();
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let (ready, attached) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || {
                // SAFETY: setns on this thread only, into a network namespace.
                assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                blocker::dataplane::pins::ensure_bpffs(dir.parent().unwrap().parent().unwrap()).unwrap();
                let mut maps = blocker::dataplane::maps::DataplaneMaps::load(&dir, 0).unwrap();
                let prog = blocker::dataplane::object::program_mut(maps.ebpf_mut().unwrap()).unwrap();
                prog.attach(&iface, aya::programs::XdpMode::Driver).expect("native XDP on the sender's veth");
                ready.send(()).unwrap();
                let _ = stopped.recv();
            });
            attached.recv().expect("the sender's XDP program attaches");
            SenderXdp { stop: Some(stop), thread: Some(thread), _root: root }
        }
    }

    impl Drop for SenderXdp {
        fn drop(&mut self) {
            drop(self.stop.take());
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    struct Setup {
        // Field order is drop order: the program leaves the veth before the
        // namespaces go.
        _sender: Option<SenderXdp>,
        net: NetnsPair,
        root: PinRoot,
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Setup {
            Setup::with_sender_xdp(true)
        }

        /// `sender_xdp`: the sender's veth runs an XDP program, so that it
        /// takes the answers; without one the receiving veth drops them.
        fn with_sender_xdp(sender_xdp: bool) -> Setup {
            let net = NetnsPair::new().unwrap();
            let sender = sender_xdp.then(|| SenderXdp::attach(&net));
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("refuse.txt"), "203.0.113.0/24\n2001:db8:b::/48\n").unwrap();
            std::fs::write(dir.path().join("deny.txt"), "198.51.100.0/24\n").unwrap();
            Setup { _sender: sender, net, root: PinRoot::new(&unique_tag()), dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).to_str().unwrap().to_owned()
        }

        fn start(&self, extra: &[&str]) -> Daemon {
            let (refuse, deny) =
                (format!("refuse={}", self.path("refuse.txt")), format!("deny={}", self.path("deny.txt")));
            let mut args = vec!["--pin-root", self.root.as_str(), "--socket"];
            let socket = self.path("blocker.sock");
            args.push(&socket);
            args.extend([
                "run",
                "--iface",
                &self.net.rx_if,
                "--xdp-mode",
                "native",
                "--reject",
                &refuse,
                "--deny",
                &deny,
            ]);
            args.extend(extra);
            Daemon::start(&self.net.rx_ns, &args, &self.dir.path().join("daemon.log")).unwrap()
        }

        fn stats(&self) -> blocker::control::protocol::InterfaceStats {
            let socket = self.path("blocker.sock");
            let out = blocker_in(
                &self.net.rx_ns,
                &["--pin-root", self.root.as_str(), "--socket", &socket, "stats", "--json"],
            )
            .unwrap();
            let reply: StatsReply = serde_json::from_slice(&out.stdout).unwrap();
            reply.interfaces.into_iter().next().unwrap()
        }

        /// ping's output from `src`.
        fn ping(&self, src: &str, args: &[&str]) -> String {
            let dst = if src.contains(':') { blocker_tests::netns::RX_V6 } else { blocker_tests::netns::RX_V4 };
            self.ping_to(src, dst, args)
        }

        /// ping's output from `src` to `dst`.
        fn ping_to(&self, src: &str, dst: &str, args: &[&str]) -> String {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.net.tx_ns, "ping", "-n", "-I", src])
                .args(args)
                .arg(dst)
                .output()
                .unwrap();
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        }
    }

    #[test]
    fn a_rejected_connect_fails_at_once_and_a_denied_one_times_out() {
        let s = Setup::new();
        let _daemon = s.start(&[]);
        s.net.serve_http(8443).unwrap();
        let started = Instant::now();
        assert_eq!(s.net.connect_from(REJECTED, 8443, "3").unwrap(), Connect::Refused);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "refused in {took:?}");
        let started = Instant::now();
        assert_eq!(s.net.connect_from(REJECTED6, 8443, "3").unwrap(), Connect::Refused, "IPv6 too");
        assert!(started.elapsed() < Duration::from_millis(500));
        let started = Instant::now();
        assert_eq!(s.net.connect_from(DENIED, 8443, "1").unwrap(), Connect::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(1), "a drop answers nothing: the client waits");
        assert_eq!(s.net.connect_from("203.0.113.200", 8443, "2").unwrap(), Connect::Refused, "the whole /24");
        let stats = s.stats();
        assert!(stats.total(blocker_common::counter::REJECTED) >= 3, "{:?}", stats.totals);
        assert_eq!(stats.list("refuse").unwrap().action.as_deref(), Some("reject"));
    }

    #[test]
    fn a_rejected_ping_gets_the_icmp_error() {
        let s = Setup::new();
        let _daemon = s.start(&[]);
        let out = s.ping(REJECTED, &["-c", "2", "-W", "1"]);
        assert!(out.contains("Packet filtered"), "ICMP 3/13: {out}");
        let out = s.ping(REJECTED6, &["-c", "2", "-W", "1"]);
        assert!(out.contains("Administratively prohibited"), "ICMPv6 1/1: {out}");
        let out = s.ping(DENIED, &["-c", "2", "-W", "1"]);
        assert!(out.contains("100% packet loss") && !out.contains("filtered"), "dropped, no answer: {out}");
    }

    /// RFC 1122 3.2.2, RFC 4443 2.4: a rejected source's packets to a
    /// broadcast or multicast address are dropped, never answered (every host
    /// of a LAN would answer one spoofed packet, from a group address).
    #[test]
    fn packets_to_broadcast_and_multicast_addresses_are_dropped_unanswered() {
        let s = Setup::new();
        let _daemon = s.start(&[]);
        let before = s.stats();
        let all_nodes = format!("ff02::1%{}", s.net.tx_if);
        for (src, dst) in [
            (REJECTED, "255.255.255.255"),
            (REJECTED, "192.0.2.255"),
            (REJECTED, "224.0.0.1"),
            (REJECTED6, all_nodes.as_str()),
        ] {
            let out = s.ping_to(src, dst, &["-b", "-c", "2", "-i", "0.2", "-W", "1"]);
            assert!(out.contains("2 packets transmitted"), "{dst}: {out}");
            assert!(!out.contains("filtered") && !out.contains("prohibited"), "{dst}: no answer: {out}");
        }
        let after = s.stats();
        let delta = |c| after.total(c) - before.total(c);
        assert_eq!(delta(blocker_common::counter::REJECTED), 0, "nothing answered");
        assert_eq!(delta(blocker_common::counter::DROPPED), 8, "each dropped");
        // The same source to this host alone is answered.
        assert!(s.ping(REJECTED, &["-c", "1", "-W", "1"]).contains("Packet filtered"));
    }

    /// A veth whose peer runs no XDP program drops the frames XDP_TX sends:
    /// blocker warns at start, and stats, status and the metrics report the
    /// answers the driver lost, not "rejected" alone.
    #[test]
    fn answers_the_device_loses_are_reported() {
        let s = Setup::with_sender_xdp(false);
        let mut daemon = s.start(&["--metrics-listen", "127.0.0.1:9465"]);
        daemon.wait_for_log("runs no XDP program", 1).unwrap();
        let log = daemon.log_text();
        assert!(log.contains(&format!("{} is a veth whose peer", s.net.rx_if)), "{log}");
        let before = s.stats().xdp_tx.expect("veth counts XDP_TX").lost.expect("and lost ones");
        let out = s.ping(REJECTED, &["-c", "3", "-i", "0.2", "-W", "1"]);
        assert!(!out.contains("Packet filtered") && out.contains("100% packet loss"), "no answer arrives: {out}");
        let stats = s.stats();
        assert_eq!(stats.total(blocker_common::counter::REJECTED), 3, "the program answered");
        let tx = stats.xdp_tx.unwrap();
        assert_eq!((tx.driver.as_str(), tx.lost.unwrap() - before), ("veth", 3), "the driver lost the 3 answers");
        let socket = s.path("blocker.sock");
        let cli = |args: &[&str]| {
            let mut all = vec!["--pin-root", s.root.as_str(), "--socket", &socket];
            all.extend(args);
            let out = blocker_in(&s.net.rx_ns, &all).unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let text = cli(&["stats"]);
        assert!(text.contains("reject answers on the device (veth driver, since it came up): sent"), "{text}");
        let status: blocker::control::protocol::StatusReply =
            serde_json::from_str(&cli(&["status", "--json"])).unwrap();
        let answers = status.interfaces[0].answers.clone().unwrap_or_default();
        assert!(answers.starts_with("ANSWERS LOST: the driver could not send 3 of them"), "{answers}");
        assert!(cli(&["status"]).contains("reject answers: ANSWERS LOST"));
        let metrics =
            blocker_tests::http::request_in_netns(&s.net.rx_ns, "127.0.0.1:9465", "GET", "/metrics").unwrap().body;
        let lost = format!("blocker_xdp_tx_lost_total{{interface=\"{}\"}} ", s.net.rx_if);
        let value: u64 = metrics.lines().find_map(|l| l.strip_prefix(&lost)).and_then(|v| v.parse().ok()).unwrap();
        assert_eq!(value - before, 3, "{metrics}");
    }

    /// With a peer that takes XDP frames, status says the answers go out and
    /// the start warns of nothing.
    #[test]
    fn answers_a_device_can_send_are_not_warned_about() {
        let s = Setup::new();
        let daemon = s.start(&[]);
        let out = s.ping(REJECTED, &["-c", "1", "-W", "1"]);
        assert!(out.contains("Packet filtered"), "{out}");
        let socket = s.path("blocker.sock");
        let out = blocker_in(&s.net.rx_ns, &["--pin-root", s.root.as_str(), "--socket", &socket, "status", "--json"])
            .unwrap();
        let status: blocker::control::protocol::StatusReply = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status.interfaces[0].answers.as_deref(), Some("sent with XDP_TX; the driver lost none"));
        assert!(!daemon.log_text().contains("runs no XDP program"), "{}", daemon.log_text());
    }

    #[test]
    fn the_reject_rate_holds_under_a_flood() {
        let s = Setup::new();
        let _daemon = s.start(&["--reject-per-second", "50"]);
        // About 2,000 pings in 2 s: at most 50 a second are answered (and a burst
        // of one second's worth), the rest dropped without an answer.
        let before = s.stats();
        let out = s.ping(REJECTED, &["-q", "-i", "0.001", "-c", "2000", "-W", "1"]);
        let after = s.stats();
        let delta = |c| after.total(c) - before.total(c);
        let (rejected, dropped) = (delta(blocker_common::counter::REJECTED), delta(blocker_common::counter::DROPPED));
        assert_eq!(rejected + dropped, 2000, "every ping is judged: {rejected} + {dropped}; {out}");
        let seconds = out
            .split("time ")
            .nth(1)
            .and_then(|t| t.split("ms").next())
            .and_then(|ms| ms.trim().parse::<f64>().ok())
            .map_or(3.0, |ms| ms / 1000.0);
        let most = (50.0 * (seconds + 2.0)) as u64;
        assert!(rejected > 0 && rejected <= most, "{rejected} answered in {seconds:.1} s (at most {most}): {out}");
        let errors: u64 = out
            .split(", ")
            .find_map(|p| p.strip_prefix('+').and_then(|e| e.strip_suffix(" errors")).and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        assert_eq!(errors, rejected, "every answer reached the sender: {out}");
    }
}

/// A frame as ping sends it (98 bytes, DF, an id): the answer's checksums hold
/// whatever the frame's length and where it lies in memory.
#[test]
fn a_real_ping_frame_gets_a_valid_answer() {
    let mut h = Harness::new(1000);
    let mut f = vec![0x82, 0x21, 0x36, 0x67, 0x22, 0x50, 0x2e, 0xe6, 0x02, 0xfc, 0xd0, 0x95, 0x08, 0x00];
    f.extend(hex("450000546c5f40004001d045cb007102c0000201080067ac778f0001"));
    f.extend(std::iter::repeat_n(0x5a, 56));
    let (action, out) = h.run(&f, 1);
    assert_eq!(action, XDP_TX);
    check_answer("ping frame", &f, &out, 14, &Answer::Unreachable { code: 13 });
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
