//! systemd's notify protocol (`Type=notify`, by the sd-notify crate): READY=1
//! once every interface is attached with its table, STATUS= lines saying what is
//! in force, STOPPING=1 on the way out. Without NOTIFY_SOCKET (not run by
//! systemd) nothing is sent.

use std::time::SystemTime;

use sd_notify::NotifyState;

use crate::clock::age_text;

/// Sends `states`; a failure is logged once per kind, never fatal: the daemon
/// enforces whether or not systemd hears about it.
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("systemd notify: {e}");
    }
}

/// Startup is finished: every interface is attached and its table in force.
pub(super) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(super) fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub(super) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// One interface for the status line.
pub(super) struct InterfaceLine<'a> {
    pub(super) name: &'a str,
    pub(super) attached: bool,
    pub(super) monitor: bool,
}

/// "enforcing 243,034 prefixes on eth0, eth1; monitor (dry run) on eth2; last
/// reload ok 3 min ago": what `systemctl status` shows.
pub(super) fn status_line(
    prefixes: usize,
    interfaces: &[InterfaceLine<'_>],
    last_reload: Option<(SystemTime, bool)>,
) -> String {
    let names = |f: &dyn Fn(&InterfaceLine<'_>) -> bool| {
        interfaces.iter().filter(|i| f(i)).map(|i| i.name).collect::<Vec<_>>().join(", ")
    };
    let mut parts = Vec::new();
    let enforcing = names(&|i| i.attached && !i.monitor);
    if !enforcing.is_empty() {
        parts.push(format!("enforcing {} prefixes on {enforcing}", thousands(prefixes)));
    }
    let monitoring = names(&|i| i.attached && i.monitor);
    if !monitoring.is_empty() {
        parts.push(format!("monitor (dry run) on {monitoring}"));
    }
    let detached = names(&|i| !i.attached);
    if !detached.is_empty() {
        parts.push(format!("NOT ATTACHED: {detached}"));
    }
    match last_reload {
        None => parts.push("no reload yet".into()),
        Some((at, ok)) => {
            let ago = at.elapsed().map_or_else(|_| "just now".into(), |d| format!("{} ago", age_text(d.as_secs())));
            parts.push(format!("last reload {} {ago}", if ok { "ok" } else { "FAILED" }));
        }
    }
    parts.join("; ")
}

/// 243034 as "243,034".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_what_is_in_force_where() {
        let at = |name, attached, monitor| InterfaceLine { name, attached, monitor };
        let line = status_line(243_034, &[at("eth0", true, false), at("eth1", true, false)], None);
        assert_eq!(line, "enforcing 243,034 prefixes on eth0, eth1; no reload yet");
        let three_min = SystemTime::now() - std::time::Duration::from_secs(180);
        let line = status_line(
            7,
            &[at("eth0", true, false), at("eth1", false, false), at("eth2", true, true)],
            Some((three_min, false)),
        );
        assert_eq!(
            line,
            "enforcing 7 prefixes on eth0; monitor (dry run) on eth2; NOT ATTACHED: eth1; last reload FAILED 3 min ago"
        );
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(999), "999");
    }
}
