//! Control requests: any line is a request or an error answer (bounded in size),
//! never a panic; a request's own line reads back as the same request.
#![no_main]

use blocker::control::protocol::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    match Request::parse(line) {
        Ok(request) => assert_eq!(Request::parse(&request.to_line()), Ok(request)),
        Err(answer) => {
            let answer = answer.to_string();
            assert!(answer.len() < 256, "an error answer quotes a bounded piece: {} bytes", answer.len())
        }
    }
});
