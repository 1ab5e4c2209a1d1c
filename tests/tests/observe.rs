//! Watching the daemon at work, end to end in the test's namespaces: `blocker
//! events` streams the sampled drop events of real packets, with its filters and
//! refusals; the summary line in the log; a reload applies a new event rate; and
//! `blocker top` in a real terminal (tmux: send-keys, capture-pane) and as a
//! snapshot.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::{
    io::BufRead as _,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use blocker::{control::protocol::StatusReply, events::Event};
use blocker_tests::{
    daemon::{blocker_bin, Daemon, PinRoot},
    netns::NetnsPair,
    sh, unique_tag,
};

const DENIED: &str = "203.0.113.2";
const WATCHED: &str = "198.51.100.2";
const DENIED6: &str = "2001:db8:b::2";

struct Setup {
    net: NetnsPair,
    root: PinRoot,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deny.txt"), "203.0.113.0/24\n2001:db8:b::/48\n").unwrap();
        std::fs::write(dir.path().join("watch.txt"), "198.51.100.0/24\n").unwrap();
        Setup { net: NetnsPair::new().expect("netns pair"), root: PinRoot::new(&unique_tag()), dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// The global options every blocker command of this test takes.
    fn global(&self) -> Vec<String> {
        vec!["--pin-root".into(), self.root.as_str().into(), "--socket".into(), self.path("blocker.sock")]
    }

    /// A daemon denying deny.txt and monitoring watch.txt.
    fn start(&self, extra: &[&str]) -> Daemon {
        let mut args = self.global();
        let (deny, watch) = (format!("deny={}", self.path("deny.txt")), format!("watch={}", self.path("watch.txt")));
        args.extend(["run", "--iface", &self.net.rx_if, "--xdp-mode", "native", "--deny", &deny].map(String::from));
        args.extend(["--monitor-list", &watch].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        Daemon::start(&self.net.rx_ns, &args, &self.dir.path().join("daemon.log")).expect("daemon starts")
    }

    /// `blocker ARGS` in the receiving namespace.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut full = self.global();
        full.extend(args.iter().map(|a| a.to_string()));
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.net.rx_ns))
            .arg(blocker_bin())
            .args(&full)
            .output()
            .unwrap()
    }

    /// `blocker events ARGS`, its lines sent to the receiver as they come.
    fn events(&self, args: &[&str]) -> EventsChild {
        let mut full = self.global();
        full.push("events".into());
        full.extend(args.iter().map(|a| a.to_string()));
        let mut child =
            Command::new(blocker_bin()).args(&full).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        EventsChild { child, lines }
    }
}

/// A running `blocker events`, killed on drop.
struct EventsChild {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl EventsChild {
    /// The next `n` lines (at most 20 s for all).
    fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < n {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => out.push(l),
                Err(_) => panic!("waited for {n} event lines, got {}: {out:?}", out.len()),
            }
        }
        out
    }

    /// Lines that arrive within `wait`.
    fn more(&self, wait: Duration) -> Vec<String> {
        std::thread::sleep(wait);
        self.lines.try_iter().collect()
    }
}

impl Drop for EventsChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(lines: &[String]) -> Vec<Event> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}"))).collect()
}

/// Waits until the daemon has a stream open for the client just started (the
/// pings must not come before it subscribes).
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn events_stream_real_drops_with_their_fields_and_filters() {
    let s = Setup::new();
    let _daemon = s.start(&[]);
    let all = s.events(&["--json"]);
    let watch_only = s.events(&["--json", "--list", "watch"]);
    settle();
    assert_eq!(s.net.ping_from(DENIED, 3).unwrap(), 0);
    assert_eq!(s.net.ping_from(DENIED6, 2).unwrap(), 0);
    assert_eq!(s.net.ping_from(WATCHED, 2).unwrap(), 2, "a monitor list passes");
    let events = parse(&all.take(7));
    let from = |src: &str| events.iter().filter(|e| e.source.to_string() == src).collect::<Vec<_>>();
    for (src, n, list, verdict, protocol) in [
        (DENIED, 3, "deny", "dropped", "icmp"),
        (DENIED6, 2, "deny", "dropped", "ipv6-icmp"),
        (WATCHED, 2, "watch", "monitored", "icmp"),
    ] {
        let got = from(src);
        assert_eq!(got.len(), n, "{src}: {events:?}");
        for e in got {
            assert_eq!(e.interface, s.net.rx_if);
            assert_eq!(e.ifindex, s.net.rx_index().unwrap());
            assert_eq!(
                (e.list.as_deref(), e.verdict.as_str(), e.protocol_name.as_str()),
                (Some(list), verdict, protocol)
            );
            assert_eq!(e.dst_port, None, "ICMP has no ports");
            let frame = if src.contains(':') { 14 + 40 + 8 + 56 } else { 14 + 20 + 8 + 56 };
            assert_eq!(e.frame_len, frame);
        }
    }
    let watched = parse(&watch_only.take(2));
    assert!(watched.iter().all(|e| e.list.as_deref() == Some("watch")), "{watched:?}");
    assert!(watch_only.more(Duration::from_millis(300)).is_empty(), "the filter lets only its list through");

    // Text lines: the same facts, for people.
    let text = s.events(&[]);
    settle();
    s.net.ping_from(DENIED, 1).unwrap();
    let line = &text.take(1)[0];
    assert!(line.contains(&format!("{} dropped {DENIED} list deny icmp 98 bytes", s.net.rx_if)), "{line}");
}

#[test]
fn event_requests_that_cannot_be_served_say_why() {
    let s = Setup::new();
    let _daemon = s.start(&[]);
    let refused = |args: &[&str], why: &str| {
        let mut full = vec!["events"];
        full.extend(args);
        let out = s.cli(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    };
    refused(&["--iface", "eth9"], &format!("no interface \"eth9\" under this daemon (it runs on {})", s.net.rx_if));
    refused(&["--list", "nope"], "no list \"nope\" in the policy in force (lists: never-block, deny, watch)");
    // Sixteen streams at most.
    let open: Vec<EventsChild> = (0..16).map(|_| s.events(&[])).collect();
    settle();
    refused(&[], "16 event streams are open already");
    drop(open);
    settle();
    let again = s.events(&["--json"]);
    settle();
    s.net.ping_from(DENIED, 1).unwrap();
    assert_eq!(parse(&again.take(1))[0].source.to_string(), DENIED, "closed streams free their places");
}

#[test]
fn a_reload_applies_a_new_event_rate_and_stats_count_what_was_sampled() {
    let s = Setup::new();
    let config = s.path("blocker.toml");
    let write = |rate: u32| {
        let text = format!(
            "[daemon]\npin_root = \"{}\"\nsocket = \"{}\"\nevents_per_second = {rate}\n[[interface]]\nname = \
             \"{}\"\nxdp_mode = \"native\"\n[policy]\ndeny = [\"deny={}\"]\n",
            s.root.as_str(),
            s.path("blocker.sock"),
            s.net.rx_if,
            s.path("deny.txt")
        );
        std::fs::write(&config, text).unwrap();
    };
    write(0);
    let daemon = Daemon::start(&s.net.rx_ns, &["run", "--config", &config], &s.dir.path().join("daemon.log")).unwrap();
    let out = s.cli(&["events"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("events are off (events_per_second = 0)"), "{err}");
    assert_eq!(s.net.ping_from(DENIED, 2).unwrap(), 0);
    let stats = |s: &Setup| {
        let out = s.cli(&["stats", "--json"]);
        let v: blocker::control::protocol::StatsReply = serde_json::from_slice(&out.stdout).unwrap();
        v.interfaces.into_iter().next().unwrap()
    };
    let st = stats(&s);
    assert_eq!((st.events_per_second, st.events.sent, st.events.rate_limited), (0, 0, 0));

    write(1);
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = s.cli(&["status", "--json"]);
        let st: StatusReply = serde_json::from_slice(&out.stdout).unwrap();
        if st.reloads >= 1 {
            assert!(st.last_reload.unwrap().ok);
            assert_eq!((st.events.events_per_second, st.events.reading), (1, true));
            break;
        }
        assert!(Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stream = s.events(&["--json"]);
    settle();
    // One per second on one CPU: a burst of five pings gives one event or two.
    s.net.ping_from(DENIED, 5).unwrap();
    let first = parse(&stream.take(1));
    assert_eq!(first[0].source.to_string(), DENIED);
    let st = stats(&s);
    assert_eq!(st.events_per_second, 1);
    assert!(st.events.sent >= 1 && st.events.sent + st.events.rate_limited == 5, "{:?}", st.events);
    assert!(st.events.rate_limited >= 3, "{:?}", st.events);
    let text = String::from_utf8_lossy(&s.cli(&["stats"]).stdout).into_owned();
    assert!(text.contains("events (1/s per CPU at most): "), "{text}");
}

/// The summary is logged once a minute, and the daemon never logs a line per
/// packet.
#[test]
fn events_are_summed_up_in_the_log_once_a_minute_never_line_by_line() {
    let s = Setup::new();
    let daemon = s.start(&["--events-per-second", "1000"]);
    let pings = s.net.ping_in_background(DENIED, 400, "0.01").unwrap();
    let started = Instant::now();
    let log = loop {
        let log = daemon.log_text();
        if log.contains("sampled drop events in the last") {
            break log;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "no summary line:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(pings);
    let line = log.lines().find(|l| l.contains("sampled drop events")).unwrap();
    assert!(line.contains("top lists: deny ") && line.contains("top sources: 203.0.113.0/24 "), "{line}");
    assert_eq!(log.matches("sampled drop events").count(), 1, "at most one a minute:\n{log}");
    assert!(!log.contains(DENIED), "no line names a packet's source:\n{log}");
}

/// tmux on its own server socket, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-L", self.socket.as_str()];
        full.extend(args);
        sh("tmux", &full)
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).is_ok()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_shows_the_dropping_list_and_its_sources_in_a_terminal_and_quits_on_q() {
    let s = Setup::new();
    let _daemon = s.start(&[]);
    let mut pings = s.net.ping_in_background(DENIED, 3000, "0.01").unwrap();
    let tmux = Tmux { socket: format!("blk-top-{}", unique_tag()) };
    let command =
        format!("nsenter --net=/run/netns/{} {} {} top", s.net.rx_ns, blocker_bin().display(), s.global().join(" "));
    tmux.run(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "60", &command]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let screen = loop {
        let screen = tmux.run(&["capture-pane", "-p", "-t", "top"]).unwrap_or_default();
        // The list table's row: list, action, packets/s (not zero), ...
        let dropping =
            screen.lines().map(cells).any(|c| c.len() > 2 && c[0] == "deny" && c[1] == "drop" && c[2] != "0");
        if dropping && screen.contains(DENIED) && screen.contains("203.0.113.0/24") {
            break screen;
        }
        assert!(Instant::now() < deadline, "top never showed the dropping list and its source:\n{screen}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(pings.is_running(), "the pings outlast the wait");
    assert!(screen.contains("Interfaces") && screen.contains(&s.net.rx_if), "{screen}");
    let iface_row = screen.lines().map(cells).find(|c| c.first() == Some(&s.net.rx_if)).unwrap();
    assert_eq!(&iface_row[1..3], ["enforce", "yes"], "mode and attached: {iface_row:?}");
    tmux.run(&["send-keys", "-t", "top", "q"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = pings.stop();
}

#[test]
fn top_without_a_terminal_prints_one_snapshot() {
    let s = Setup::new();
    let _daemon = s.start(&[]);
    let pings = s.net.ping_in_background(DENIED, 1000, "0.01").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = s.cli(&["top"]);
    let _ = pings.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("blocker top - "), "{text}");
    let deny = text.lines().map(cells).find(|c| c.len() > 2 && c[0] == "deny").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(deny[1], "drop");
    let rate: f64 = deny[2].replace(',', "").parse().unwrap();
    assert!(rate > 10.0, "about 100 pings a second are dropped: {deny:?}");
    assert!(text.lines().map(cells).any(|c| c.first().map(String::as_str) == Some(DENIED)), "a top source: {text}");
}

/// The cells of a table row as shown: words, borders left out.
fn cells(line: &str) -> Vec<String> {
    line.split(|c: char| c.is_whitespace() || c == '│').filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// A client that asks for events and then stops reading is cut off once its
/// socket stays full for 5 s; the daemon and the other streams go on.
#[test]
fn a_stream_that_stops_reading_is_cut_off_and_others_go_on() {
    use std::io::{BufRead as _, Read as _, Write as _};
    let s = Setup::new();
    let _daemon = s.start(&["--events-per-second", "5000"]);
    let mut stalled = std::os::unix::net::UnixStream::connect(s.path("blocker.sock")).unwrap();
    writeln!(stalled, "{{\"command\":\"events\"}}").unwrap();
    let mut header = String::new();
    std::io::BufReader::new(stalled.try_clone().unwrap()).read_line(&mut header).unwrap();
    assert!(header.contains("\"ok\":true"), "{header}");
    let healthy = s.events(&["--json"]);
    settle();
    // Thousands of events: far more than the stalled client's socket buffer holds.
    let pings = s.net.ping_in_background(DENIED, 4000, "0.002").unwrap();
    assert!(!healthy.take(200).is_empty());
    std::thread::sleep(Duration::from_secs(7));
    // The daemon answers, and the healthy stream still gets events.
    let out = s.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!healthy.take(10).is_empty());
    // The stalled client finds its stream ended once it reads what was queued.
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest);
    assert!(read.is_ok(), "the daemon closed the stream: {read:?}");
    let _ = pings.stop();
}
