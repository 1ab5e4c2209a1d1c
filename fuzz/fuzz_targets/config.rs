//! The TOML config file: parsed into run options or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = blocker::config::parse(std::path::Path::new("fuzz.toml"), text);
});
