//! CIDR lists: any text is parsed or refused with a line number, never a panic;
//! every prefix read prints as text that reads back as the same prefix.
#![no_main]

use blocker::{net::parse_prefix, source::cidr_list::parse_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(prefixes) = parse_list(std::path::Path::new("fuzz.txt"), text) {
        for p in prefixes {
            assert_eq!(parse_prefix(&p.to_string()).ok(), Some(p), "{p} does not read back");
        }
    }
});
