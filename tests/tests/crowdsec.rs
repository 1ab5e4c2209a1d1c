//! The CrowdSec bouncer against a real LAPI (Debian's crowdsec 1.4.6, a
//! private instance in the test's namespace): decisions added, deleted and
//! expiring in CrowdSec are enforced at XDP within the update frequency; the
//! LAPI killed, or the key revoked, leaves enforcement as it was, and status
//! says it is stale; the LAPI back, the feed is in sync again.
#![allow(unused_crate_dependencies)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use blocker::control::protocol::{BansReply, StatusReply};
use blocker_tests::{
    crowdsec::Lapi,
    daemon::{blocker_bin, Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag, wait_until,
};

const SOURCE_V4: &str = "198.51.100.2";
const SOURCE_V6: &str = "2001:db8:a::2";
/// The LAPI's port inside the test's namespace (its own loopback).
const PORT: u16 = 8080;

struct Client {
    sock: String,
}

impl Client {
    fn out(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(blocker_bin()).args(["--socket", &self.sock]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
    fn status(&self) -> StatusReply {
        serde_json::from_slice(&self.out(&["status", "--json"])).unwrap()
    }
    fn bans(&self, args: &[&str]) -> BansReply {
        let mut all = vec!["bans", "--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&self.out(&all)).unwrap()
    }
    fn status_text(&self) -> String {
        let out = Command::new(blocker_bin()).args(["--socket", &self.sock, "status"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// The targets CrowdSec's cscli origin bans.
    fn banned(&self) -> Vec<String> {
        let b = self.bans(&[]);
        b.bans.into_iter().filter(|b| b.origin.starts_with("crowdsec:")).map(|b| b.target).collect()
    }
}

/// A daemon in `net`'s receiving namespace, pulling from `lapi` every second.
fn daemon(
    net: &NetnsPair,
    root: &PinRoot,
    dir: &std::path::Path,
    lapi: &Lapi,
    key: &std::path::Path,
) -> (Daemon, Client) {
    // Region data of the test's own: the test ranges are "FR".
    let regions = dir.join("regions.csv");
    std::fs::write(
        &regions,
        "198.51.100.0,198.51.100.255,FR\n2001:db8:a::,2001:db8:a:ffff:ffff:ffff:ffff:ffff,FR\n203.0.113.0,203.0.113.255,DE\n",
    )
    .unwrap();
    // ASN data of the test's own: AS64500 holds both test sources.
    let asns = dir.join("asn.csv");
    std::fs::write(
        &asns,
        "198.51.100.0,198.51.100.127,64500,\"Test Hosting, Inc.\"\n2001:db8:a::,2001:db8:a:ffff:ffff:ffff:ffff:ffff,64500,\"Test Hosting, Inc.\"\n",
    )
    .unwrap();
    let sock = dir.join("blocker.sock").display().to_string();
    let args = [
        "--pin-root",
        root.as_str(),
        "--socket",
        &sock,
        "run",
        "--iface",
        &net.rx_if,
        "--xdp-mode",
        "native",
        "--no-default-never-block",
        "--country-source",
        &format!("csv:{}", regions.display()),
        "--asn-source",
        &format!("csv:{}", asns.display()),
        "--crowdsec-lapi-url",
        &lapi.url(),
        "--crowdsec-api-key-file",
        key.to_str().unwrap(),
        "--crowdsec-update-frequency",
        "1s",
        // What the LAPI's deltas miss comes with the next full pull.
        "--crowdsec-full-pull-every",
        "5s",
    ];
    let d = Daemon::start(&net.rx_ns, &args, &dir.join("daemon.log")).unwrap();
    let c = Client { sock };
    assert!(
        wait_until(Duration::from_secs(15), || c.status().crowdsec.is_some_and(|s| s.last_success.is_some())),
        "no pull succeeded: {}",
        d.log_text()
    );
    (d, c)
}

#[test]
fn a_real_lapis_decisions_are_enforced_and_outlive_it() {
    let net = NetnsPair::new().unwrap();
    let root = PinRoot::new(&unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("lapi")).unwrap();
    let mut lapi = Lapi::start(&dir.join("lapi"), &net.rx_ns, PORT).unwrap();
    let key = lapi.bouncer("blocker").unwrap();
    let (daemon, c) = daemon(&net, &root, dir, &lapi, &key);
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 1);

    // An Ip decision: enforced within update_frequency (1 s) + 1 s.
    lapi.cscli(&["decisions", "add", "--ip", SOURCE_V4, "--duration", "1h"]).unwrap();
    let added = Instant::now();
    assert!(wait_until(Duration::from_secs(10), || c.banned() == ["198.51.100.2/32"]), "{}", daemon.log_text());
    let took = added.elapsed();
    assert!(took <= Duration::from_secs(2), "enforced {took:?} after the decision");
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0, "dropped at XDP");
    let b = c.bans(&["--origin", "crowdsec:cscli"]);
    assert!(b.bans[0].remaining_seconds.is_some_and(|r| r > 3500 && r <= 3600), "{b:?}");

    // Deleted in CrowdSec: it passes again.
    lapi.cscli(&["decisions", "delete", "--ip", SOURCE_V4]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned().is_empty()), "{}", daemon.log_text());
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 1);
    // Usage metrics: this LAPI (1.4.6) answers 404; blocker stops trying.
    let usage = c.status().crowdsec.unwrap().usage_metrics;
    assert!(usage.as_deref().is_some_and(|u| u.contains("404") && u.contains("not sent again")), "{usage:?}");

    // A Range: an address inside it (not the network address) is dropped.
    lapi.cscli(&["decisions", "add", "--range", "198.51.100.0/24", "--duration", "1h"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned() == ["198.51.100.0/24"]));
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0);
    lapi.cscli(&["decisions", "delete", "--range", "198.51.100.0/24"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned().is_empty()));

    // A Country, from the region data blocker has: both families.
    lapi.cscli(&["decisions", "add", "--scope", "Country", "--value", "FR", "--duration", "1h"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned().len() == 2), "{:?}", c.banned());
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0);
    assert_eq!(net.ping_from(SOURCE_V6, 1).unwrap(), 0);
    // (cscli 1.4 deletes by ip, range, id or all.)
    lapi.cscli(&["decisions", "delete", "--all"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned().is_empty()));
    assert_eq!(net.ping_from(SOURCE_V6, 1).unwrap(), 1);

    // An AS, from the ASN data blocker has: both families.
    lapi.cscli(&["decisions", "add", "--scope", "AS", "--value", "64500", "--duration", "1h"]).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || c.banned() == ["198.51.100.0/25", "2001:db8:a::/48"]),
        "{:?}",
        c.banned()
    );
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0);
    assert_eq!(net.ping_from(SOURCE_V6, 1).unwrap(), 0);
    lapi.cscli(&["decisions", "delete", "--all"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned().is_empty()));
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 1);

    // Expiry: the ban ends on time by itself.
    lapi.cscli(&["decisions", "add", "--ip", SOURCE_V6, "--duration", "4s"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned() == ["2001:db8:a::2/128"]));
    assert_eq!(net.ping_from(SOURCE_V6, 1).unwrap(), 0);
    assert!(wait_until(Duration::from_secs(6), || net.ping_from(SOURCE_V6, 1).unwrap() == 1), "expired");

    // The LAPI killed: enforcement holds, status says stale.
    lapi.cscli(&["decisions", "add", "--ip", SOURCE_V4, "--duration", "1h"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned() == ["198.51.100.2/32"]));
    lapi.kill();
    assert!(wait_until(Duration::from_secs(5), || c.status().crowdsec.unwrap().failing_since.is_some()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0, "still dropped with the LAPI down");
    assert_eq!(c.banned(), ["198.51.100.2/32"]);
    let text = c.status_text();
    assert!(text.contains("STALE") && text.contains("cannot reach the LAPI"), "{text}");

    // Back: in sync again (a full pull), and its changes apply.
    lapi.run().unwrap();
    assert!(wait_until(Duration::from_secs(10), || c.status().crowdsec.unwrap().failing_since.is_none()));
    assert_eq!(c.banned(), ["198.51.100.2/32"]);
    lapi.cscli(&["decisions", "delete", "--ip", SOURCE_V4]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned().is_empty()));
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 1);

    // The key revoked: refused (403), said, and nothing flushed.
    lapi.cscli(&["decisions", "add", "--ip", SOURCE_V4, "--duration", "1h"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned() == ["198.51.100.2/32"]));
    lapi.cscli(&["bouncers", "delete", "blocker"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c
        .status()
        .crowdsec
        .unwrap()
        .last_error
        .is_some_and(|e| e.contains("refused the API key"))));
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0);
    let log = daemon.log_text();
    // Failures are logged at a bounded rate: one line for the LAPI down, one for the key.
    assert!(log.matches("CrowdSec: ").count() <= 4, "{log}");
}

/// The daemon's resident memory, in MiB.
fn rss_mib(pid: u32) -> u64 {
    blocker_tests::proc_status_kib(pid, "VmRSS:") / 1024
}

#[test]
fn a_hundred_thousand_imported_decisions_are_enforced() {
    let net = NetnsPair::new().unwrap();
    let root = PinRoot::new(&unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("lapi")).unwrap();
    let lapi = Lapi::start(&dir.join("lapi"), &net.rx_ns, PORT).unwrap();
    let key = lapi.bouncer("blocker").unwrap();
    let (daemon, c) = daemon(&net, &root, dir, &lapi, &key);
    let before = rss_mib(daemon.pid().unwrap());
    // 100,000 addresses of 10/8, and the test's source.
    let mut csv = String::from("value,duration,reason\n");
    for i in 0..100_000u32 {
        csv.push_str(&format!("10.{}.{}.{},4h,import\n", (i >> 16) & 255, (i >> 8) & 255, i & 255));
    }
    csv.push_str(&format!("{SOURCE_V4},4h,import\n"));
    let file = dir.join("decisions.csv");
    std::fs::write(&file, csv).unwrap();
    // SQLite under a bulk import and a bouncer's pulls every second may answer
    // "database is locked" (a LAPI limit, not blocker's): tried again.
    let mut tries = 0;
    while let Err(e) = lapi.cscli(&["decisions", "import", "-i", file.to_str().unwrap()]) {
        tries += 1;
        assert!(tries < 3 && e.to_string().contains("database is locked"), "{e}");
    }
    let imported = Instant::now();
    let count = || c.status().bans.get("crowdsec:cscli-import").copied().unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(60), || count() == 100_001),
        "{} of 100,001 enforced; the LAPI holds {} decisions: {}",
        count(),
        lapi.active(&key),
        daemon.log_text()
    );
    eprintln!(
        "100,001 imported decisions enforced {:?} after the import returned; daemon RSS {before} MiB before, {} MiB \
         after",
        imported.elapsed(),
        rss_mib(daemon.pid().unwrap())
    );
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0);
    // One deleted among them: only it goes.
    lapi.cscli(&["decisions", "delete", "--ip", SOURCE_V4]).unwrap();
    assert!(wait_until(Duration::from_secs(10), || count() == 100_000));
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 1);
    assert!(c.status().crowdsec.unwrap().decisions >= 100_000);
}

#[test]
fn a_lapi_over_tls_with_a_client_certificate() {
    let net = NetnsPair::new().unwrap();
    let root = PinRoot::new(&unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("lapi")).unwrap();
    let (lapi, certs) = Lapi::start_tls(&dir.join("lapi"), &net.rx_ns, PORT).unwrap();
    let sock = dir.join("blocker.sock").display().to_string();
    // The whole [crowdsec] table, from a config file: no API key, a client
    // certificate (OU bouncer-ou) and the CA that signed the LAPI's.
    let config = dir.join("blocker.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\npin_root = \"{}\"\nsocket = \"{sock}\"\nstate_dir = \"{}\"\nwatch_files = false\n\
             [[interface]]\nname = \"{}\"\nxdp_mode = \"native\"\n[policy]\nno_default_never_block = true\n\
             [crowdsec]\nlapi_url = \"{}\"\nupdate_frequency = \"1s\"\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            root.as_str(),
            dir.join("state").display(),
            net.rx_if,
            lapi.url(),
            certs.ca.display(),
            certs.bouncer_cert.display(),
            certs.bouncer_key.display(),
        ),
    )
    .unwrap();
    let out = Command::new(blocker_bin()).arg("check-config").arg("--config").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("crowdsec: LAPI https://127.0.0.1:8080/ with a client certificate"), "{said}");
    let daemon =
        Daemon::start(&net.rx_ns, &["run", "--config", config.to_str().unwrap()], &dir.join("daemon.log")).unwrap();
    let c = Client { sock };
    assert!(
        wait_until(Duration::from_secs(15), || c.status().crowdsec.is_some_and(|s| s.last_success.is_some())),
        "no pull over TLS: {}",
        daemon.log_text()
    );
    assert!(lapi.cscli(&["bouncers", "list"]).unwrap().contains("tls"), "the LAPI took the certificate");
    lapi.cscli(&["decisions", "add", "--ip", SOURCE_V4, "--duration", "1h"]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || c.banned() == ["198.51.100.2/32"]), "{}", daemon.log_text());
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0);

    // A key file that is not one is refused by check-config (and a start),
    // by its key and path.
    std::fs::write(&certs.bouncer_key, "not a key").unwrap();
    let out = Command::new(blocker_bin()).arg("check-config").arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("crowdsec.key") && e.contains("bouncer.key"), "{e}");
}

/// A LAPI cannot be made to send a malformed decision: a scripted server
/// stands in for one, with the stream of a LAPI that went wrong.
#[test]
fn malformed_decisions_are_skipped_counted_and_named() {
    use std::sync::{Arc, Mutex};
    let net = NetnsPair::new().unwrap();
    let root = PinRoot::new(&unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let body = r#"{"deleted":null,"new":[
        {"id":1,"scope":"Ip","value":"not-an-address","type":"ban","duration":"1h","origin":"crowdsec","scenario":"x"},
        7,
        {"id":2,"scope":"ip","value":"198.51.100.2/32","type":"ban","duration":"1h","origin":"crowdsec","scenario":"x"},
        {"id":3,"scope":"IP","value":"::ffff:203.0.113.5","type":"ban","duration":"1h","origin":"crowdsec","scenario":"y"},
        {"id":4,"scope":"Ip","value":"203.0.113.6","type":"ban","duration":"forever","origin":"crowdsec","scenario":"y"},
        {"id":5,"scope":"Username","value":"root","type":"ban","duration":"1h","origin":"crowdsec","scenario":"y"},
        {"id":6,"scope":"AS","value":"AS4294967295","type":"ban","duration":"1h","origin":"crowdsec","scenario":"y"}]}"#;
    let script = Arc::new(Mutex::new(blocker_tests::http::Script {
        fallback: Some(body.as_bytes().to_vec()),
        ..Default::default()
    }));
    let url = blocker_tests::http::serve_in_netns(&net.rx_ns, script.clone()).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, "scripted-key\n").unwrap();
    let sock = dir.join("blocker.sock").display().to_string();
    let args = [
        "--pin-root",
        root.as_str(),
        "--socket",
        &sock,
        "run",
        "--iface",
        &net.rx_if,
        "--xdp-mode",
        "native",
        "--no-default-never-block",
        "--crowdsec-lapi-url",
        &url,
        "--crowdsec-api-key-file",
        key.to_str().unwrap(),
        "--crowdsec-update-frequency",
        "1s",
    ];
    let daemon = Daemon::start(&net.rx_ns, &args, &dir.join("daemon.log")).unwrap();
    let c = Client { sock };
    assert!(wait_until(Duration::from_secs(10), || c.banned().len() == 2), "{:?}: {}", c.banned(), daemon.log_text());
    let mut banned = c.banned();
    banned.sort();
    assert_eq!(banned, ["198.51.100.2/32", "203.0.113.5/32"]);
    assert_eq!(net.ping_from(SOURCE_V4, 1).unwrap(), 0);
    let status = c.status().crowdsec.unwrap();
    assert!(status.skipped.get("malformed").is_some_and(|n| *n >= 3), "{status:?}");
    assert!(status.skipped.get("scope").is_some_and(|n| *n >= 1), "{status:?}");
    // An AS the (bundled) ASN data has no prefix for.
    assert!(status.skipped.get("unknown_asn").is_some_and(|n| *n >= 1), "{status:?}");
    assert!(status.failing_since.is_none(), "a malformed decision never fails a pull: {status:?}");
    let log = daemon.log_text();
    assert!(log.contains("malformed decisions skipped") && log.contains("not-an-address"), "{log}");
    // Said at most once a minute, however many pulls repeat them.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(daemon.log_text().matches("malformed decisions skipped").count(), 1);
    let requests = script.lock().unwrap().requests.clone();
    assert!(
        requests[0].contains("startup=true") && requests[0].to_ascii_lowercase().contains("x-api-key: scripted-key")
    );
    assert!(requests.iter().skip(1).any(|r| r.contains("startup=false")), "{requests:?}");
}
