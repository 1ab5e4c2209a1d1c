//! ASN sources: start,end,asn[,organisation] CSV, iptoasn TSV, GeoLite2-ASN
//! MMDB and the ASN snapshot format: read or refused, never a panic. The first
//! byte picks the format.
#![no_main]

use blocker::source::asn::{db::AsnDb, ranges, snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let mut db = AsnDb::default();
    match which % 4 {
        0 | 1 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let read = if which % 4 == 0 {
                ranges::parse_csv("fuzz", text, &mut db)
            } else {
                ranges::parse_tsv("fuzz", text, &mut db)
            };
            if read.is_ok() {
                db.normalize();
                // What a read database encodes, it decodes again.
                let bytes = snapshot::encode(&db, "fuzz", "2026-01-01").unwrap();
                let back = snapshot::decode(&bytes).unwrap();
                assert_eq!(back.systems.len(), db.systems.len());
            }
        }
        2 => {
            let _ = ranges::read_mmdb(rest, "fuzz", &mut db);
        }
        _ => {
            let _ = snapshot::decode(rest);
        }
    }
});
