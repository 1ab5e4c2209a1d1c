//! RIR delegation files and start,end,country CSV files: read or refused, never
//! a panic. The first byte picks the format.
#![no_main]

use blocker::source::region::{csv::parse_csv, db::RegionDb, rir::parse_rir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut db = RegionDb::default();
    let read = if which & 1 == 0 { parse_rir("fuzz", text, &mut db) } else { parse_csv("fuzz", text, &mut db) };
    if read.is_ok() {
        db.normalize();
    }
});
