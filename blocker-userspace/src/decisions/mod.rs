//! Live decisions: bans of an address or a prefix, each with an expiry, an
//! origin and a reason, enforced beside the table without recompiling it.
//!
//! - `store`: the daemon's set of bans, its expiry order and the state file
//!   (a journal of wall-clock expiries) that carries them across a reboot.
//! - `enforce`: the bans written into every interface's pinned ban maps
//!   (`dataplane::bans`), which the XDP program reads.
//!
//! One clock: the kernel's boot clock (CLOCK_BOOTTIME). The maps and the store
//! hold boot-clock expiries; wall-clock times appear only in the state file
//! (converted when it is read back) and in what is shown to people.

pub mod crowdsec;
pub mod enforce;
pub mod service;
pub mod store;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::{parse_prefix, Family, Prefix};

/// Where the state file is kept by default (`--state-dir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/blocker";
/// The state file's name in the state directory.
pub const STATE_FILE: &str = "bans.jsonl";
/// The origin of bans given with `blocker ban` and no `--origin`.
pub const DEFAULT_ORIGIN: &str = "cli";
/// The most bytes of an origin name, and of a reason.
pub const MAX_ORIGIN_BYTES: usize = 64;
pub const MAX_REASON_BYTES: usize = 256;
/// The most distinct origins: each takes a list id for its counters.
pub const MAX_ORIGINS: usize = 64;
/// The longest ban.
pub const MAX_BAN: Duration = crate::clock::MAX_DURATION;

/// What a ban does to the packets of its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BanAction {
    #[default]
    Drop,
    /// Dropped and answered (TCP RST, ICMP unreachable), as a reject list.
    Reject,
}

impl BanAction {
    pub const fn code(self) -> u32 {
        match self {
            BanAction::Drop => blocker_common::ACTION_DROP,
            BanAction::Reject => blocker_common::ACTION_REJECT,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            BanAction::Drop => "drop",
            BanAction::Reject => "reject",
        }
    }
}

/// One ban as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub prefix: Prefix,
    /// Boot-clock nanoseconds when it ends (None: never).
    pub expires_ns: Option<u64>,
    pub origin: String,
    /// Shared: a feed's thousands of bans of one scenario hold one copy.
    pub reason: std::sync::Arc<str>,
    pub action: BanAction,
}

/// Why a ban request was refused; nothing of the request was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    #[error("{target}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error(
        "origin {origin}: use at most {MAX_ORIGIN_BYTES} bytes of letters, digits and . _ - : / @ (like crowdsec or \
         fail2ban-sshd)"
    )]
    BadOrigin { origin: String },
    #[error("the reason is longer than {MAX_REASON_BYTES} bytes")]
    ReasonTooLong,
    #[error("--for {secs} s: a ban lasts from 1 s to {} days", MAX_BAN.as_secs() / 86_400)]
    BadDuration { secs: u64 },
    #[error(
        "{target} covers every {family} address: nothing would reach this host; pass --force if that is what you \
         want"
    )]
    Everything { target: String, family: &'static str },
    #[error(
        "{target} covers {client}, the SSH client this command runs from: you would lock yourself out; pass --force \
         if you have console access"
    )]
    LocksOut { target: String, client: String },
    #[error(
        "{needed} {family} bans needed, the ban map holds {max}: nothing was banned; unban some, or wait for bans to \
         expire"
    )]
    Full { family: &'static str, needed: usize, max: u32 },
    #[error("{count} origins are in use already (at most {MAX_ORIGINS}): reuse one")]
    TooManyOrigins { count: usize },
    #[error("nothing to ban: give ADDR or CIDR arguments, or --from FILE")]
    Empty,
}

/// Checks an origin name: bounded, and free of anything a log line, a label
/// or a terminal would read as structure.
pub fn check_origin(origin: &str) -> Result<(), BanError> {
    let ok = !origin.is_empty()
        && origin.len() <= MAX_ORIGIN_BYTES
        && origin.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BanError::BadOrigin { origin: crate::source::input::quote(origin) })
    }
}

/// Checks a reason: bounded; control characters become spaces.
pub fn clean_reason(reason: &str) -> Result<String, BanError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(BanError::ReasonTooLong);
    }
    Ok(reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
}

/// Reads a ban target: an address or a CIDR (an IPv4-mapped IPv6 one is the
/// IPv4 one it names); host bits set are refused with the network meant.
pub fn parse_target(text: &str) -> Result<Prefix, BanError> {
    let t = text.trim();
    parse_prefix(t).map_err(|e| BanError::BadTarget { target: crate::source::input::quote(t), reason: e.to_string() })
}

/// Refuses what would cut this host off, unless forced: a /0, or a prefix
/// that holds `client` (the SSH client the command runs from).
pub fn check_lockout(prefix: &Prefix, client: Option<std::net::IpAddr>) -> Result<(), BanError> {
    if prefix.len == 0 {
        return Err(BanError::Everything { target: prefix.to_string(), family: prefix.family.name() });
    }
    if let Some(ip) = client {
        let (family, addr) = crate::net::ip_to_u128(ip);
        let (family, addr) = unmapped(family, addr);
        if prefix.contains(family, addr) {
            return Err(BanError::LocksOut { target: prefix.to_string(), client: ip.to_string() });
        }
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn unmapped(family: Family, addr: u128) -> (Family, u128) {
    if family == Family::V6 && addr >> 32 == 0xffff {
        (Family::V4, addr & 0xffff_ffff)
    } else {
        (family, addr)
    }
}

/// The SSH client address of this session, as sshd puts it in the environment
/// (`SSH_CONNECTION=client port server port`, or `SSH_CLIENT`).
pub fn ssh_client() -> Option<std::net::IpAddr> {
    ["SSH_CONNECTION", "SSH_CLIENT"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find_map(|v| v.split_whitespace().next().and_then(|a| a.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_reasons_are_bounded_and_plain() {
        assert!(check_origin("crowdsec").is_ok());
        assert!(check_origin("fail2ban-sshd").is_ok());
        assert!(check_origin("lists:firehol_level1").is_ok());
        for bad in ["", "a b", "x\"y", "evil\n", &"o".repeat(65), "é"] {
            assert!(check_origin(bad).is_err(), "{bad:?}");
        }
        assert_eq!(clean_reason("ssh\nbrute\tforce").unwrap(), "ssh brute force");
        assert_eq!(clean_reason(&"r".repeat(300)), Err(BanError::ReasonTooLong));
    }

    #[test]
    fn lockouts_are_refused() {
        let client: std::net::IpAddr = "198.51.100.7".parse().unwrap();
        assert!(matches!(check_lockout(&parse_target("0.0.0.0/0").unwrap(), None), Err(BanError::Everything { .. })));
        assert!(matches!(check_lockout(&parse_target("::/0").unwrap(), None), Err(BanError::Everything { .. })));
        let e = check_lockout(&parse_target("198.51.100.0/24").unwrap(), Some(client)).unwrap_err();
        assert!(e.to_string().contains("198.51.100.7") && e.to_string().contains("--force"), "{e}");
        assert!(check_lockout(&parse_target("198.51.101.0/24").unwrap(), Some(client)).is_ok());
        // The client seen as an IPv4-mapped IPv6 address is the same host.
        let mapped: std::net::IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert!(check_lockout(&parse_target("198.51.100.7").unwrap(), Some(mapped)).is_err());
        assert_eq!(parse_target("::ffff:203.0.113.9").unwrap(), parse_target("203.0.113.9").unwrap());
        let e = parse_target("10.0.0.1/8").unwrap_err().to_string();
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }
}
