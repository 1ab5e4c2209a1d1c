//! The pulls from the LAPI, on a thread of their own: a slow or dead LAPI
//! never stalls the daemon. Decisions go to the daemon in batches through a
//! bounded channel, so a pull of millions holds one batch at a time.

use std::{
    collections::BTreeMap,
    io::Read as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{stream, CrowdsecOptions, Decision, Normalizer, Skip, MAX_ANSWER_BYTES};

/// Decisions per batch handed to the daemon.
const BATCH: usize = 8192;
/// Examples of malformed decisions kept per pull, for the log.
const EXAMPLES: usize = 3;

/// What the pull thread tells the daemon.
#[derive(Debug)]
pub enum FeedMessage {
    /// A pull begins; with `startup`, it sends every active decision.
    Begin {
        startup: bool,
    },
    Batch {
        new: Vec<Decision>,
        deleted: Vec<u64>,
    },
    End(PullReport),
    /// What the LAPI did with a usage-metrics report.
    Usage(UsageOutcome),
}

/// The answer to a usage-metrics report (`POST /v1/usage-metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsageOutcome {
    Sent,
    /// 404: a LAPI older than 1.6.3, which takes none: not sent again.
    Unsupported,
    Failed(String),
}

/// How often usage metrics are reported (the first soon after the start).
pub const USAGE_EVERY: Duration = Duration::from_secs(15 * 60);

/// A usage-metrics report: the packets dropped per CrowdSec origin since the
/// last one, and the bans in force per origin (`origin` labels as CrowdSec
/// names them).
pub fn usage_payload(
    started_unix: u64,
    window: Duration,
    dropped: &BTreeMap<String, u64>,
    active: &BTreeMap<String, usize>,
) -> serde_json::Value {
    let mut items = Vec::new();
    for (origin, n) in dropped {
        items.push(serde_json::json!({"name": "dropped", "unit": "packet", "value": n, "labels": {"origin": origin}}));
    }
    for (origin, n) in active {
        items.push(
            serde_json::json!({"name": "active_decisions", "unit": "ip", "value": n, "labels": {"origin": origin}}),
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "remediation_components": [{
            "type": "blocker",
            "name": "blocker",
            "version": env!("CARGO_PKG_VERSION"),
            "os": {"name": "linux", "version": release.trim()},
            "feature_flags": [],
            "utc_startup_timestamp": started_unix,
            "metrics": [{
                "meta": {"window_size_seconds": window.as_secs(), "utc_now_timestamp": crate::clock::wall_ms() / 1000},
                "items": items,
            }],
        }]
    })
}

fn post_usage(agent: &ureq::Agent, opts: &CrowdsecOptions, payload: &serde_json::Value) -> UsageOutcome {
    let url = format!("{}/v1/usage-metrics", opts.lapi_url.trim_end_matches('/'));
    let mut req = agent.post(&url).header("Content-Type", "application/json");
    if let Some(key) = &opts.api_key {
        req = req.header("X-Api-Key", &key.0);
    }
    match req.send(payload.to_string()) {
        Ok(r) if r.status().is_success() => UsageOutcome::Sent,
        Ok(r) if r.status().as_u16() == 404 => UsageOutcome::Unsupported,
        Ok(r) => UsageOutcome::Failed(format!("the LAPI answered {}", r.status().as_u16())),
        Err(e) => UsageOutcome::Failed(e.to_string()),
    }
}

/// How a pull went.
#[derive(Debug, Default)]
pub struct PullReport {
    pub startup: bool,
    /// Why the pull failed (what was handed on before stays); None: it did not.
    pub error: Option<String>,
    pub new: u64,
    pub deleted: u64,
    pub skipped: BTreeMap<Skip, u64>,
    /// Some malformed decisions, described.
    pub examples: Vec<String>,
    pub took: Duration,
}

/// The HTTP agent for `opts`, with its TLS settings read: a bad certificate
/// file refuses the start (and `check-config`), naming its key.
pub fn agent(opts: &CrowdsecOptions, key_prefix: &str) -> Result<ureq::Agent, super::OptionError> {
    let tls = opts
        .tls
        .config()
        .map_err(|e| super::OptionError { key: format!("{key_prefix}{}", e.key), reason: e.reason })?;
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // A startup answer of millions streams for a while; a stalled one ends.
        .timeout_per_read(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .user_agent(concat!("blocker/", env!("CARGO_PKG_VERSION")))
        .build()
        .into())
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stream's URL, with the options' filters as the LAPI reads them.
pub fn stream_url(opts: &CrowdsecOptions, startup: bool) -> String {
    let scopes: Vec<&str> = opts.scopes.iter().map(|s| s.name()).collect();
    let mut url = format!(
        "{}/v1/decisions/stream?startup={startup}&scopes={}",
        opts.lapi_url.trim_end_matches('/'),
        encode(&scopes.join(","))
    );
    for (name, values) in [
        ("origins", &opts.origins),
        ("scenarios_containing", &opts.scenarios_containing),
        ("scenarios_not_containing", &opts.scenarios_not_containing),
    ] {
        if !values.is_empty() {
            url.push_str(&format!("&{name}={}", encode(&values.join(","))));
        }
    }
    url
}

/// Starts the pull thread: a `startup` pull first, then one every
/// `update_frequency`, and a `startup` pull again after any failure or when
/// the daemon sets `resync`. It ends when the daemon drops its receiver.
pub fn spawn(
    opts: Arc<CrowdsecOptions>,
    agent: ureq::Agent,
    tx: tokio::sync::mpsc::Sender<FeedMessage>,
    resync: Arc<AtomicBool>,
    usage: std::sync::mpsc::Receiver<serde_json::Value>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("crowdsec".into()).spawn(move || {
        let mut normalizer = Normalizer::new(opts.clone());
        let mut startup = true;
        let mut last_full = Instant::now();
        loop {
            if resync.swap(false, Ordering::Relaxed) || opts.full_pull_every.is_some_and(|d| last_full.elapsed() >= d) {
                startup = true;
            }
            while let Ok(payload) = usage.try_recv() {
                if tx.blocking_send(FeedMessage::Usage(post_usage(&agent, &opts, &payload))).is_err() {
                    return;
                }
            }
            let began = Instant::now();
            if tx.blocking_send(FeedMessage::Begin { startup }).is_err() {
                return;
            }
            let mut report = pull(&agent, &opts, startup, &tx, &mut normalizer);
            report.took = began.elapsed();
            let ok = report.error.is_none();
            if ok && startup {
                last_full = began;
            }
            if tx.blocking_send(FeedMessage::End(report)).is_err() {
                return;
            }
            startup = !ok;
            std::thread::sleep(opts.update_frequency.saturating_sub(began.elapsed()).max(Duration::from_millis(100)));
        }
    })?;
    Ok(())
}

/// One pull: the answer read as a stream, handed on in batches.
fn pull(
    agent: &ureq::Agent,
    opts: &CrowdsecOptions,
    startup: bool,
    tx: &tokio::sync::mpsc::Sender<FeedMessage>,
    normalizer: &mut Normalizer,
) -> PullReport {
    let mut report = PullReport { startup, ..Default::default() };
    let mut req = agent.get(stream_url(opts, startup));
    if let Some(key) = &opts.api_key {
        req = req.header("X-Api-Key", &key.0);
    }
    let lapi = &opts.lapi_url;
    let resp = match req.call() {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(format!("cannot reach the LAPI at {lapi}: {e}"));
            return report;
        }
    };
    let status = resp.status().as_u16();
    let mut body = resp.into_body().into_with_config().limit(MAX_ANSWER_BYTES).reader();
    if status != 200 {
        let mut text = Vec::new();
        let _ = (&mut body).take(200).read_to_end(&mut text);
        let said = crate::source::input::quote(String::from_utf8_lossy(&text).trim());
        report.error = Some(match status {
            401 | 403 => format!(
                "the LAPI at {lapi} refused the API key ({status} {said}): check crowdsec.api_key_file, or make a key \
                 with `cscli bouncers add blocker`"
            ),
            _ => format!("the LAPI at {lapi} answered {status} {said}"),
        });
        return report;
    }
    let (mut new, mut deleted) = (Vec::with_capacity(BATCH), Vec::new());
    let send = |new: &mut Vec<Decision>, deleted: &mut Vec<u64>| -> Result<(), String> {
        let batch = FeedMessage::Batch { new: std::mem::take(new), deleted: std::mem::take(deleted) };
        tx.blocking_send(batch).map_err(|_| "the daemon is stopping".to_string())
    };
    let mut skipped: BTreeMap<Skip, u64> = BTreeMap::new();
    let mut examples = Vec::new();
    let read = stream::read(body, &mut |list, raw| {
        match list {
            stream::List::New => match normalizer.new_decision(&raw) {
                Ok(d) => {
                    report.new += 1;
                    new.push(d);
                }
                Err((skip, why)) => {
                    *skipped.entry(skip).or_default() += 1;
                    if skip == Skip::Malformed && examples.len() < EXAMPLES {
                        examples.push(why);
                    }
                }
            },
            stream::List::Deleted => match normalizer.deleted(&raw) {
                Ok(id) => {
                    report.deleted += 1;
                    deleted.push(id);
                }
                Err(why) => {
                    *skipped.entry(Skip::Malformed).or_default() += 1;
                    if examples.len() < EXAMPLES {
                        examples.push(format!("deleted: {why}"));
                    }
                }
            },
        }
        if new.len() + deleted.len() >= BATCH {
            send(&mut new, &mut deleted)?;
        }
        Ok(())
    });
    let last = send(&mut new, &mut deleted);
    report.skipped = skipped;
    report.examples = examples;
    report.error = match (read, last) {
        (Err(e), _) => Some(format!("reading the LAPI's answer from {lapi}: {e}")),
        (Ok(()), Err(e)) => Some(e),
        (Ok(()), Ok(())) => None,
    };
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_metrics_as_the_lapi_takes_them() {
        let dropped = BTreeMap::from([("cscli".to_string(), 12u64)]);
        let active = BTreeMap::from([("CAPI".to_string(), 3usize)]);
        let p = usage_payload(1_700_000_000, Duration::from_secs(900), &dropped, &active);
        let rc = &p["remediation_components"][0];
        assert_eq!(rc["type"], "blocker");
        assert_eq!(rc["utc_startup_timestamp"], 1_700_000_000u64);
        assert_eq!(rc["os"]["name"], "linux");
        let m = &rc["metrics"][0];
        assert_eq!(m["meta"]["window_size_seconds"], 900);
        assert_eq!(
            m["items"][0],
            serde_json::json!({"name": "dropped", "unit": "packet", "value": 12, "labels": {"origin": "cscli"}})
        );
        assert_eq!(m["items"][1]["name"], "active_decisions");
        assert_eq!(m["items"][1]["labels"]["origin"], "CAPI");
    }

    #[test]
    fn the_stream_url_carries_the_filters() {
        let o = super::super::CrowdsecSection {
            lapi_url: Some("http://127.0.0.1:8080/".into()),
            api_key: Some("k".into()),
            origins: vec!["crowdsec".into(), "cscli".into()],
            scenarios_not_containing: vec!["http probing&x".into()],
            ..Default::default()
        }
        .check("crowdsec.")
        .unwrap();
        assert_eq!(
            stream_url(&o, true),
            "http://127.0.0.1:8080/v1/decisions/stream?startup=true&scopes=ip%2Crange%2Ccountry%2Cas&origins=crowdsec%2Ccscli\
             &scenarios_not_containing=http%20probing%26x"
        );
    }
}
