//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/*`, `/v3/watch`,
//! `/v3/lease/*`, served by etcd 3.4 on its client port): plain HTTP through
//! ureq, no gRPC stack and no protoc at build time. Requests go to the
//! endpoints in turn, starting with the last that answered, so a member that
//! is down costs one failed connection.
//!
//! A watch is a streamed answer of JSON objects. It resumes from the last
//! revision it saw plus one; when etcd has compacted that revision away it
//! says so (`compact_revision`), and the caller lists again (`range_prefix`)
//! and watches from the listing's revision plus one, as Cilium's kvstore
//! watcher does.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};

/// The most bytes of one answer (a range of a bundle's chunks stays far below).
const MAX_ANSWER_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint answered ({endpoints}): {last}")]
    Unreachable { endpoints: String, last: String },
    #[error("etcd at {endpoint} answered {status}: {body}")]
    Status { endpoint: String, status: u16, body: String },
    #[error("etcd at {endpoint}: {reason}")]
    Malformed { endpoint: String, reason: String },
    /// The revision a watch resumes from was compacted away: list again.
    #[error("etcd compacted the history up to revision {compact_revision}: list again")]
    Compacted { compact_revision: i64 },
    #[error("bad etcd endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// A key and its value, with etcd's revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete { key: String, mod_revision: i64 },
}

pub struct Etcd {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    /// Watches stream for this long, then resume (a silent dead peer ends too).
    watch_agent: ureq::Agent,
    next: AtomicUsize,
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv_of(v: &Value) -> Option<Kv> {
    let key = STANDARD.decode(v.get("key")?.as_str()?).ok()?;
    let value = match v.get("value").and_then(Value::as_str) {
        Some(s) => STANDARD.decode(s).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key: String::from_utf8(key).ok()?,
        value,
        mod_revision: v.get("mod_revision").map_or(0, int),
        lease: v.get("lease").map_or(0, int),
    })
}

impl Etcd {
    /// `endpoints`: `http://HOST:PORT` or `HOST:PORT`, at least one.
    pub fn new(endpoints: &[String], timeout: Duration, watch_for: Duration) -> Result<Etcd, EtcdError> {
        Self::with_tls(endpoints, timeout, watch_for, ureq::tls::TlsConfig::default())
    }

    /// `new`, with TLS settings for `https://` endpoints (a CA, a client certificate).
    pub fn with_tls(
        endpoints: &[String],
        timeout: Duration,
        watch_for: Duration,
        tls: ureq::tls::TlsConfig,
    ) -> Result<Etcd, EtcdError> {
        let mut out = Vec::new();
        for e in endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let url = if e.contains("://") { e.to_owned() } else { format!("http://{e}") };
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(EtcdError::Endpoint { endpoint: e.to_owned(), reason: "http:// or https:// only".into() });
            }
            out.push(url.trim_end_matches('/').to_owned());
        }
        if out.is_empty() {
            return Err(EtcdError::Endpoint { endpoint: String::new(), reason: "give at least one".into() });
        }
        let agent = |global: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .tls_config(tls.clone())
                .timeout_connect(Some(Duration::from_secs(3).min(timeout)))
                .timeout_global(global)
                .http_status_as_error(false)
                .build()
                .into()
        };
        // Each client starts at an endpoint of its own: a fleet's hosts spread
        // over the members.
        let mut r = [0u8; 4];
        let _ = getrandom::fill(&mut r);
        let next = (u32::from_le_bytes(r) as usize % out.len()).into();
        Ok(Etcd { endpoints: out, agent: agent(Some(timeout)), watch_agent: agent(Some(watch_for)), next })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends one request, to each endpoint in turn until one answers.
    fn call(&self, agent: &ureq::Agent, path: &str, body: &Value) -> Result<(String, ureq::Body), EtcdError> {
        let n = self.endpoints.len();
        let first = self.next.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = &self.endpoints[i];
            match agent.post(format!("{endpoint}{path}")).send(body.to_string()) {
                Ok(resp) => {
                    self.next.store(i, Ordering::Relaxed);
                    let status = resp.status().as_u16();
                    let body = resp.into_body();
                    if status != 200 {
                        let mut text = Vec::new();
                        let _ = body.into_with_config().limit(4096).reader().read_to_end(&mut text);
                        let text = crate::source::input::quote(String::from_utf8_lossy(&text).trim());
                        return Err(EtcdError::Status { endpoint: endpoint.clone(), status, body: text });
                    }
                    return Ok((endpoint.clone(), body));
                }
                Err(e) => last = format!("{endpoint}: {e}"),
            }
        }
        Err(EtcdError::Unreachable { endpoints: self.endpoints.join(","), last })
    }

    /// One request and its JSON answer. "Unavailable" (503: a leader being
    /// elected, as after a member was lost) is asked again a few times, from
    /// 250 ms to 2 s apart, before it is an error.
    fn json(&self, path: &str, body: &Value) -> Result<(String, Value), EtcdError> {
        let mut pause = Duration::from_millis(250);
        loop {
            match self.json_once(path, body) {
                Err(EtcdError::Status { status: 503, .. }) if pause <= Duration::from_secs(2) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    fn json_once(&self, path: &str, body: &Value) -> Result<(String, Value), EtcdError> {
        let (endpoint, body) = self.call(&self.agent, path, body)?;
        let value: Value = serde_json::from_reader(body.into_with_config().limit(MAX_ANSWER_BYTES).reader())
            .map_err(|e| EtcdError::Malformed { endpoint: endpoint.clone(), reason: e.to_string() })?;
        Ok((endpoint, value))
    }

    /// The key's value, if any, and the store's revision.
    pub fn get(&self, key: &str) -> Result<(Option<Kv>, i64), EtcdError> {
        let (_, v) = self.json("/v3/kv/range", &json!({ "key": b64(key.as_bytes()) }))?;
        let kv = v.get("kvs").and_then(Value::as_array).and_then(|a| a.first()).and_then(kv_of);
        Ok((kv, v.pointer("/header/revision").map_or(0, int)))
    }

    /// Every key under `prefix`, and the store's revision of that listing.
    pub fn range_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        self.range(prefix.as_bytes(), &prefix_end(prefix.as_bytes()))
    }

    /// Every key from `key` up to (not including) `end`, in one read.
    pub fn range(&self, key: &[u8], end: &[u8]) -> Result<(Vec<Kv>, i64), EtcdError> {
        let body = json!({ "key": b64(key), "range_end": b64(end) });
        let (endpoint, v) = self.json("/v3/kv/range", &body)?;
        let kvs = v.get("kvs").and_then(Value::as_array).cloned().unwrap_or_default();
        let out: Option<Vec<Kv>> = kvs.iter().map(kv_of).collect();
        let out = out.ok_or_else(|| EtcdError::Malformed { endpoint, reason: "a key that is not UTF-8".into() })?;
        Ok((out, v.pointer("/header/revision").map_or(0, int)))
    }

    /// The last key under `prefix` (in key order), if any: one key, no value.
    pub fn last_key(&self, prefix: &str) -> Result<Option<String>, EtcdError> {
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "limit": "1",
            "sort_order": "DESCEND",
            "sort_target": "KEY",
            "keys_only": true,
        });
        let (_, v) = self.json("/v3/kv/range", &body)?;
        Ok(v.get("kvs").and_then(Value::as_array).and_then(|a| a.first()).and_then(kv_of).map(|kv| kv.key))
    }

    /// Puts a value (under a lease, when given); returns the new revision.
    pub fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64, EtcdError> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(id) = lease {
            body["lease"] = json!(id.to_string());
        }
        let (_, v) = self.json("/v3/kv/put", &body)?;
        Ok(v.pointer("/header/revision").map_or(0, int))
    }

    /// Puts `value` only if the key's modification revision is `expected` (0:
    /// the key must not exist). Returns whether it was put.
    pub fn put_if(&self, key: &str, value: &[u8], expected: i64) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let body = json!({
            "compare": [{ "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expected.to_string() }],
            "success": [{ "request_put": { "key": k, "value": b64(value) } }],
        });
        let (_, v) = self.json("/v3/kv/txn", &body)?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Deletes every key under `prefix`.
    pub fn delete_prefix(&self, prefix: &str) -> Result<(), EtcdError> {
        let body = json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes())) });
        self.json("/v3/kv/deleterange", &body).map(|_| ())
    }

    /// A lease of `ttl` seconds; returns its id.
    pub fn grant(&self, ttl: u64) -> Result<i64, EtcdError> {
        let (endpoint, v) = self.json("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        match v.get("ID").map(int) {
            Some(id) if id != 0 => Ok(id),
            _ => Err(EtcdError::Malformed { endpoint, reason: format!("no lease id in {v}") }),
        }
    }

    /// Renews a lease; returns its TTL (0: it expired, grant another).
    pub fn keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let (_, v) = self.json("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        Ok(v.pointer("/result/TTL").map_or(0, int))
    }

    /// Watches the keys under `prefix` from `start_revision`, handing each
    /// answer's events to `each`, until the stream ends (the watch time is up,
    /// or the member went away) or `each` says stop. Returns the last revision
    /// seen (`start_revision - 1` when none), from which the next watch
    /// resumes plus one. `Compacted`: list again.
    pub fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
        mut each: impl FnMut(Vec<Event>, i64) -> bool,
    ) -> Result<i64, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": start_revision.to_string(),
        }});
        let (endpoint, stream) = self.call(&self.watch_agent, "/v3/watch", &body)?;
        let mut reader = BufReader::new(stream.into_with_config().limit(u64::MAX).reader());
        let mut last = start_revision - 1;
        let mut line = Vec::new();
        loop {
            line.clear();
            // One answer per line; a line is bounded like any answer.
            match (&mut reader).take(MAX_ANSWER_BYTES).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return Ok(last), // ended: resume from `last`
                Ok(_) => {}
            }
            let v: Value = serde_json::from_slice(&line)
                .map_err(|e| EtcdError::Malformed { endpoint: endpoint.clone(), reason: format!("watch: {e}") })?;
            let Some(result) = v.get("result") else {
                let reason = format!("watch: {}", crate::source::input::quote(&v.to_string()));
                return Err(EtcdError::Malformed { endpoint, reason });
            };
            let compact = result.get("compact_revision").map_or(0, int);
            if compact > 0 {
                return Err(EtcdError::Compacted { compact_revision: compact });
            }
            if result.get("canceled").and_then(Value::as_bool) == Some(true) {
                return Ok(last);
            }
            let mut events = Vec::new();
            for e in result.get("events").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                let Some(kv) = e.get("kv").and_then(kv_of) else { continue };
                last = last.max(kv.mod_revision);
                events.push(match e.get("type").and_then(Value::as_str) {
                    Some("DELETE") => Event::Delete { key: kv.key, mod_revision: kv.mod_revision },
                    _ => Event::Put(kv),
                });
            }
            if !events.is_empty() && !each(events, last) {
                return Ok(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_endpoints() {
        assert_eq!(prefix_end(b"blocker/"), b"blocker0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
        let e = Etcd::new(
            &["127.0.0.1:2379".into(), " http://h:1/ ".into()],
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(e.endpoints(), ["http://127.0.0.1:2379", "http://h:1"]);
        assert!(Etcd::new(&["ftp://x".into()], Duration::from_secs(1), Duration::from_secs(1)).is_err());
        assert!(Etcd::new(&[], Duration::from_secs(1), Duration::from_secs(1)).is_err());
    }
}
