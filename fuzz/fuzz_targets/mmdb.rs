//! MaxMind databases: read or refused, never a panic, and never a walk longer than
//! the file's own node count (libFuzzer's -timeout catches one).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = blocker::source::region::mmdb::read_bytes(data.to_vec(), "fuzz.mmdb");
});
