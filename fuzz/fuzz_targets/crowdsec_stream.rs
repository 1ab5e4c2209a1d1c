//! A LAPI's decision stream answer, read as a stream and normalized: every
//! decision handed on (or skipped with a reason), errors for broken answers,
//! never a panic. Durations and targets are checked against their bounds.
#![no_main]

use std::sync::Arc;

use blocker::decisions::crowdsec::{stream, CrowdsecSection, Normalizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = CrowdsecSection {
        lapi_url: Some("http://127.0.0.1:8080/".into()),
        api_key: Some("k".into()),
        ..Default::default()
    }
    .check("crowdsec.")
    .expect("valid options");
    let mut n = Normalizer::new(Arc::new(opts));
    let _ = stream::read(data, &mut |list, raw| {
        match list {
            stream::List::New => {
                if let Ok(d) = n.new_decision(&raw) {
                    assert!(d.lasts_ns > 0);
                    blocker::decisions::check_origin(&d.origin).expect("origins are plain");
                }
            }
            stream::List::Deleted => {
                let _ = n.deleted(&raw);
            }
        }
        Ok(())
    });
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = stream::go_duration_ns(text);
    }
});
