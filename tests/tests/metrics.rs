//! The Prometheus endpoint, tried with the real thing: Debian's Prometheus
//! scrapes the daemon inside the test's network namespace and its HTTP API shows
//! the packets the test sent; promtool accepts the exposition and the shipped
//! alert rules; every metric the shipped dashboard and rules use is exposed.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use blocker_tests::{
    daemon::{Daemon, PinRoot},
    http::{query_escape, request_in_netns, request_in_netns_with, Answer},
    netns::NetnsPair,
    unique_tag,
};

const PINGS: u32 = 4;
const DENIED_SOURCE: &str = "203.0.113.2";
/// Where the daemon serves its metrics, inside the receiving namespace.
const METRICS: &str = "127.0.0.1:9187";

struct Setup {
    net: NetnsPair,
    root: PinRoot,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deny.txt"), "203.0.113.0/24\n2001:db8:b::/48\n").unwrap();
        Setup { net: NetnsPair::new().expect("netns pair"), root: PinRoot::new(&unique_tag()), dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// A daemon denying deny.txt, with metrics on `METRICS`.
    fn start(&self, socket: &str, log: &str) -> anyhow::Result<Daemon> {
        let deny = format!("deny={}", self.path("deny.txt"));
        let args = [
            "--pin-root",
            self.root.as_str(),
            "--socket",
            &self.path(socket),
            "run",
            "--iface",
            &self.net.rx_if,
            "--xdp-mode",
            "native",
            "--deny",
            &deny,
            "--metrics-listen",
            METRICS,
        ];
        Daemon::start(&self.net.rx_ns, &args, &self.dir.path().join(log))
    }

    fn scrape(&self) -> Answer {
        request_in_netns(&self.net.rx_ns, METRICS, "GET", "/metrics").expect("scrape")
    }
}

/// A Prometheus server in the receiving namespace, stopped on drop.
struct Prometheus {
    child: Child,
    ns: String,
    log: PathBuf,
}

impl Prometheus {
    const ADDR: &'static str = "127.0.0.1:9090";

    fn start(ns: &str, dir: &Path) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: blocker\n    \
                 static_configs:\n      - targets: ['{METRICS}']\n"
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={}", Self::ADDR))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus; cargo xtask setup installs it)");
        Prometheus { child, ns: ns.to_owned(), log }
    }

    /// The value of an instant query's single sample, if there is one.
    fn query(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", query_escape(query));
        let answer = request_in_netns(&self.ns, Self::ADDR, "GET", &path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        let result = v["data"]["result"].as_array()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits (at most 60 s) until `query` gives `want`.
    fn wait_for(&self, query: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(query);
            if last == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let targets = request_in_netns(&self.ns, Self::ADDR, "GET", "/api/v1/targets").map(|a| a.body);
        panic!(
            "{query}: {last:?}, not {want}; targets: {targets:?}\nprometheus log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names an exposition declares (`# TYPE` lines), with the sample
/// names a counter adds (`_total`).
fn declared(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut words = l.split_whitespace();
            let (name, kind) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
            let mut names = vec![name.to_owned()];
            if kind == "counter" {
                names.push(format!("{name}_total"));
            }
            names
        })
        .collect()
}

/// Every `blocker_*` metric name in `text`.
fn referenced(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("blocker_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn dist(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn prometheus_sees_the_drops_of_the_denied_list() {
    let s = Setup::new();
    let _daemon = s.start("blocker.sock", "daemon.log").unwrap();
    let prometheus = Prometheus::start(&s.net.rx_ns, s.dir.path());
    let attached = format!("blocker_interface_attached{{interface=\"{}\",mode=\"enforce\"}}", s.net.rx_if);
    prometheus.wait_for(&attached, 1.0);
    assert_eq!(s.net.ping_from(DENIED_SOURCE, PINGS).unwrap(), 0, "the denied source is dropped");
    prometheus.wait_for("blocker_list_packets_total{list=\"deny\",action=\"drop\"}", f64::from(PINGS));
    let dropped =
        format!("blocker_packets_total{{interface=\"{}\",direction=\"inbound\",verdict=\"dropped\"}}", s.net.rx_if);
    prometheus.wait_for(&dropped, f64::from(PINGS));
    prometheus.wait_for("blocker_table_prefixes{list=\"deny\",family=\"ipv4\"}", 1.0);
    prometheus.wait_for("blocker_last_reload_success", 1.0);

    // What Prometheus asks for, it gets: OpenMetrics.
    let accept = [("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")];
    let open = request_in_netns_with(&s.net.rx_ns, METRICS, "GET", "/metrics", &accept).unwrap();
    assert_eq!(open.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert!(open.body.ends_with("# EOF\n"));
    // Other clients (curl, promtool) get the Prometheus text format.
    let scrape = s.scrape();
    assert_eq!(scrape.status, 200);
    assert_eq!(scrape.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), scrape.body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        scrape.body
    );
}

/// The dashboard and the alert rules in dist/ use only metrics the daemon
/// exposes, and promtool accepts the rules.
#[test]
fn the_shipped_dashboard_and_alert_rules_use_exposed_metrics() {
    let s = Setup::new();
    let _daemon = s.start("blocker.sock", "daemon.log").unwrap();
    let exposed = declared(&s.scrape().body);
    let dashboard = dist("blocker-dashboard.json");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let rules = dist("blocker-alerts.yml");
    for (file, text) in [("blocker-dashboard.json", &dashboard), ("blocker-alerts.yml", &rules)] {
        let names = referenced(text);
        assert!(names.len() >= 5, "{file} uses blocker's metrics: {names:?}");
        for name in names {
            assert!(exposed.contains(&name), "{file} uses {name}, which the daemon does not expose: {exposed:?}");
        }
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/blocker-alerts.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&out.stdout));
}

/// Only GET /metrics is served; idle peers never lock scrapes out; a second
/// daemon cannot take the port, and the first one keeps enforcing.
#[test]
fn the_endpoint_bounds_its_peers_and_its_port() {
    let s = Setup::new();
    let _daemon = s.start("blocker.sock", "daemon.log").unwrap();
    let ns = &s.net.rx_ns;
    assert_eq!(request_in_netns(ns, METRICS, "POST", "/metrics").unwrap().status, 405);
    assert_eq!(request_in_netns(ns, METRICS, "GET", "/").unwrap().status, 404);

    // An unprivileged local user holds 50 idle connections and opens each
    // again as soon as it is closed: every real scrape is still answered, and
    // the connections closed to make room are counted.
    let (host, port) = METRICS.split_once(':').unwrap();
    let holder = format!(
        "import socket, select, time\n\
         def conn():\n    s = socket.socket(); s.connect(('{host}', {port})); return s\n\
         socks = [conn() for _ in range(50)]\n\
         while True:\n    r, _, _ = select.select(socks, [], [], 0.5)\n    for s in r:\n\
         \x20       if not s.recv(1):\n            socks.remove(s); s.close(); socks.append(conn())\n"
    );
    let mut attacker = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", &holder])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (Debian package python3)");
    std::thread::sleep(Duration::from_secs(1));
    let mut answered = 0;
    for _ in 0..20 {
        if request_in_netns(ns, METRICS, "GET", "/metrics").is_ok_and(|a| a.status == 200) {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(attacker.try_wait().unwrap().is_none(), "the idle peers were held all along");
    let _ = attacker.kill();
    let out = attacker.wait_with_output().unwrap();
    assert_eq!(answered, 20, "every scrape is answered; holder: {}", String::from_utf8_lossy(&out.stderr));
    let body = s.scrape().body;
    let closed: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(r#"blocker_metrics_connections_closed_total{reason="idle"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no idle count:\n{body}"));
    assert!(closed >= 20, "idle connections closed to make room: {closed}");
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    let lines = log.matches("idle closed to make room").count();
    assert_eq!(lines, 1, "one log line a minute at most:\n{log}");

    let second = s.start("second.sock", "second.log");
    let err = second.err().expect("a second daemon on the same port is refused").to_string();
    assert!(err.contains(&format!("cannot listen on {METRICS} for metrics")), "{err}");
    assert_eq!(s.net.ping_from(DENIED_SOURCE, 2).unwrap(), 0, "the first daemon still enforces");
    assert_eq!(s.scrape().status, 200);
}

/// A list named by a path of every character a path may hold (each ASCII byte
/// but NUL and `/`, and some beyond ASCII): its label values are escaped, so
/// promtool accepts both formats, no series is injected, and the names read
/// back whole.
#[test]
fn label_values_are_escaped_for_every_byte_a_path_may_hold() {
    let s = Setup::new();
    let mut weird: String = (1u8..=127).filter(|b| *b != b'/').map(char::from).collect();
    weird.push_str("é—😀");
    let dir = s.dir.path().join(&weird);
    std::fs::create_dir(&dir).unwrap();
    let list = dir.join(format!("{weird}.txt"));
    std::fs::write(&list, "203.0.113.0/24\n").unwrap();
    let list = list.to_str().unwrap().to_owned();
    let args = [
        "--pin-root",
        s.root.as_str(),
        "--socket",
        &s.path("blocker.sock"),
        "run",
        "--iface",
        &s.net.rx_if,
        "--xdp-mode",
        "native",
        "--deny",
        &list,
        "--metrics-listen",
        METRICS,
    ];
    let _daemon = Daemon::start(&s.net.rx_ns, &args, &s.dir.path().join("daemon.log")).unwrap();
    assert_eq!(s.net.ping_from(DENIED_SOURCE, 2).unwrap(), 0);
    let accept = [("Accept", "application/openmetrics-text;version=1.0.0")];
    let open = request_in_netns_with(&s.net.rx_ns, METRICS, "GET", "/metrics", &accept).unwrap().body;
    let classic = s.scrape().body;
    for (format, body) in [("openmetrics", &open), ("classic", &classic)] {
        // Every sample line starts with a metric name: nothing broke out of a value.
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("blocker_"), "{format}: a line that is no sample: {line:?}");
        }
        let attached = body.lines().filter(|l| l.starts_with("blocker_interface_attached{")).count();
        assert_eq!(attached, 1, "{format}: one series per interface:\n{body}");
        let names: Vec<String> = body
            .lines()
            .filter(|l| l.starts_with("blocker_list_packets_total{"))
            .filter_map(|l| label_value(l, "list"))
            .filter(|name| name != "never-block")
            .collect();
        assert_eq!(names, std::slice::from_ref(&list), "{format}: the list's name reads back whole");
        let sources: Vec<String> = body
            .lines()
            .filter(|l| l.starts_with("blocker_source_last_success_timestamp_seconds{"))
            .filter_map(|l| label_value(l, "source"))
            .collect();
        assert_eq!(sources, std::slice::from_ref(&list), "{format}: the source's too");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), classic.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Prometheus itself reads the exposition and stores the name whole.
    let prometheus = Prometheus::start(&s.net.rx_ns, s.dir.path());
    let ours = r#"blocker_list_packets_total{list!="never-block"}"#;
    prometheus.wait_for(&format!("count({ours})"), 1.0);
    let path = format!("/api/v1/query?query={}", query_escape(ours));
    let answer = request_in_netns(&s.net.rx_ns, Prometheus::ADDR, "GET", &path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(v["data"]["result"][0]["metric"]["list"].as_str(), Some(list.as_str()), "{}", answer.body);
}

/// The value of label `name` in a sample line, unescaped as the text formats say.
fn label_value(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}
