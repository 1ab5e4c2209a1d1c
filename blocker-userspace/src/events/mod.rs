//! Sampled drop events: what the XDP program writes to each interface's ring
//! buffer (`blocker_common::events::DropEvent`), read by one thread of the
//! daemon (`reader`), decoded into `Event`, and handed to the control clients
//! that stream them (`blocker events`, `blocker top`) through an `EventHub`.

pub mod reader;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use blocker_common::{
    counter,
    events::{DropEvent, FAMILY_V4, FLAG_LATER_FRAGMENT, FLAG_NO_L4},
};
use serde::{Deserialize, Serialize};

use crate::policy::Action;

/// Default of `[daemon] events_per_second` / `--events-per-second`.
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 100;

/// One sampled packet as `blocker events --json` prints it (one per line) and
/// the control socket streams it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When the program saw it (RFC 3339, UTC, milliseconds; the kernel's
    /// clock has tick resolution, a few ms).
    pub time: String,
    /// The same, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub interface: String,
    pub ifindex: u32,
    pub source: IpAddr,
    /// The list that matched (None: its id has no name in the maps).
    pub list: Option<String>,
    /// Its scope (`default` outside every scope).
    pub scope: Option<String>,
    pub list_id: u32,
    /// The list's action: "drop", "reject" or "monitor".
    pub action: String,
    /// What happened: "dropped", "rejected" (dropped and answered) or
    /// "monitored" (would have been dropped).
    pub verdict: String,
    /// IP protocol number of the L4 header.
    pub protocol: u8,
    /// Its name ("tcp", "udp", "icmp", "ipv6-icmp", ...), or the number.
    pub protocol_name: String,
    /// TCP, UDP, SCTP, UDP-Lite, DCCP: the destination port, unless the
    /// packet carries no L4 header (`l4`).
    pub dst_port: Option<u16>,
    /// Why the L4 header was not read: "later fragment" (a fragment other than
    /// the first), "unreachable" (the frame ends first, or too many IPv6
    /// extension headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<String>,
    /// Whole frame length, Ethernet header included.
    pub frame_len: u32,
}

impl Event {
    /// Decodes a ring buffer record from `interface`, naming its list (scope and
    /// name) with `list_name` and dating it with `clock`. None: not a whole record.
    pub fn decode(
        record: &[u8],
        interface: &str,
        clock: &EventClock,
        list_name: impl FnOnce(u32) -> Option<(String, String)>,
    ) -> Option<Event> {
        let raw: DropEvent = bytemuck::try_pod_read_unaligned(record.get(..size_of::<DropEvent>())?).ok()?;
        let source = if raw.family == FAMILY_V4 {
            IpAddr::V4(Ipv4Addr::new(raw.src[0], raw.src[1], raw.src[2], raw.src[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(raw.src))
        };
        let l4 = if raw.flags & FLAG_LATER_FRAGMENT != 0 {
            Some("later fragment".to_owned())
        } else if raw.flags & FLAG_NO_L4 != 0 {
            Some("unreachable".to_owned())
        } else {
            None
        };
        let has_port = blocker_common::events::has_ports(raw.protocol) && l4.is_none();
        let at = clock.wall(raw.time_ns);
        let list_id = u32::from(raw.list_id);
        let (scope, list) = list_name(list_id).unzip();
        Some(Event {
            time: crate::clock::rfc3339_millis(at),
            time_ms: at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            interface: interface.to_owned(),
            ifindex: raw.ifindex,
            source,
            list,
            scope,
            list_id,
            action: Action::from_code(u32::from(raw.action)).map_or("unknown", |a| a.name()).to_owned(),
            verdict: verdict_name(u32::from(raw.verdict)).to_owned(),
            protocol: raw.protocol,
            protocol_name: protocol_name(raw.protocol),
            dst_port: has_port.then_some(raw.dst_port),
            l4,
            frame_len: raw.frame_len,
        })
    }

    /// The /24 (IPv4) or /48 (IPv6) the source lies in, as `blocker top` and
    /// the summary group them.
    pub fn source_prefix(&self) -> String {
        match self.source {
            IpAddr::V4(a) => {
                let o = a.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
            }
        }
    }
}

fn verdict_name(verdict: u32) -> &'static str {
    match verdict {
        counter::DROPPED => "dropped",
        counter::MONITORED => "monitored",
        counter::REJECTED => "rejected",
        _ => "unknown",
    }
}

/// The usual name of an IP protocol number (IANA's keywords, lower case).
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        2 => "igmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        41 => "ipv6".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

/// Turns the event clock (CLOCK_MONOTONIC) into wall-clock time, from one
/// reading of both clocks.
#[derive(Clone, Copy, Debug)]
pub struct EventClock {
    monotonic_ns: u64,
    wall: SystemTime,
}

impl EventClock {
    pub fn now() -> EventClock {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let monotonic_ns = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
        EventClock { monotonic_ns, wall: SystemTime::now() }
    }

    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        if monotonic_ns <= self.monotonic_ns {
            self.wall - Duration::from_nanos(self.monotonic_ns - monotonic_ns)
        } else {
            self.wall + Duration::from_nanos(monotonic_ns - self.monotonic_ns)
        }
    }
}

/// How many event streams may be open at once: each holds a queue of events.
pub const MAX_STREAMS: usize = 16;
/// Events queued for each stream; a stream that falls further behind is told
/// how many it missed.
const STREAM_QUEUE: usize = 4096;

/// Where the reader hands events to the streams. Cloned into each control client.
#[derive(Clone)]
pub struct EventHub {
    sender: tokio::sync::broadcast::Sender<Arc<Event>>,
    streams: Arc<AtomicUsize>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub { sender: tokio::sync::broadcast::channel(STREAM_QUEUE).0, streams: Arc::default() }
    }
}

/// One open stream; it counts against `MAX_STREAMS` until dropped.
pub struct Stream {
    pub receiver: tokio::sync::broadcast::Receiver<Arc<Event>>,
    streams: Arc<AtomicUsize>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EventHub {
    /// Hands an event to every open stream (none open: it is dropped here).
    pub fn publish(&self, event: Event) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(event));
        }
    }

    /// A new stream, unless `MAX_STREAMS` are open.
    pub fn subscribe(&self) -> Option<Stream> {
        let open = self.streams.fetch_add(1, Ordering::Relaxed);
        let stream = Stream { receiver: self.sender.subscribe(), streams: self.streams.clone() };
        (open < MAX_STREAMS).then_some(stream)
    }
}

/// Which events a stream wants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        self.iface.as_ref().is_none_or(|i| *i == e.interface)
            && self.list.as_ref().is_none_or(|l| e.list.as_ref() == Some(l))
    }
}

#[cfg(test)]
mod tests {
    use blocker_common::{events::FAMILY_V6, ACTION_DROP};

    use super::*;

    fn raw(family: u8, src: [u8; 16], protocol: u8, flags: u8) -> Vec<u8> {
        let e = DropEvent {
            time_ns: 5_000_000_000,
            src,
            ifindex: 7,
            frame_len: 98,
            list_id: 3,
            dst_port: 443,
            family,
            protocol,
            action: ACTION_DROP as u8,
            verdict: counter::DROPPED as u8,
            flags,
            _pad: [0; 7],
        };
        bytemuck::bytes_of(&e).to_vec()
    }

    #[test]
    fn records_decode_with_names_ports_and_wall_clock_time() {
        let clock = EventClock { monotonic_ns: 6_000_000_000, wall: SystemTime::UNIX_EPOCH + Duration::from_secs(100) };
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[203, 0, 113, 7]);
        let e = Event::decode(&raw(FAMILY_V4, v4, 6, 0), "eth0", &clock, |id| {
            Some(("default".into(), format!("list{id}")))
        })
        .unwrap();
        assert_eq!(e.source, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            (e.list.as_deref(), e.list_id, e.action.as_str(), e.verdict.as_str()),
            (Some("list3"), 3, "drop", "dropped")
        );
        assert_eq!((e.protocol_name.as_str(), e.dst_port, e.l4.as_deref()), ("tcp", Some(443), None));
        assert_eq!((e.interface.as_str(), e.ifindex, e.frame_len), ("eth0", 7, 98));
        // One second before the clock's reading.
        assert_eq!((e.time.as_str(), e.time_ms), ("1970-01-01T00:01:39.000Z", 99_000));
        assert_eq!(e.source_prefix(), "203.0.113.0/24");

        let v6: [u8; 16] = "2001:db8:b:1::2".parse::<Ipv6Addr>().unwrap().octets();
        let e = Event::decode(&raw(FAMILY_V6, v6, 17, FLAG_LATER_FRAGMENT), "eth1", &clock, |_| None).unwrap();
        assert_eq!((e.dst_port, e.l4.as_deref(), e.list.as_deref()), (None, Some("later fragment"), None));
        assert_eq!(e.source_prefix(), "2001:db8:b::/48");
        // ICMP has no ports.
        let e = Event::decode(&raw(FAMILY_V4, v4, 1, 0), "eth0", &clock, |_| None).unwrap();
        assert_eq!((e.protocol_name.as_str(), e.dst_port), ("icmp", None));
        // A short record is no event.
        assert!(Event::decode(&raw(FAMILY_V4, v4, 6, 0)[..40], "eth0", &clock, |_| None).is_none());
    }

    #[test]
    fn streams_are_bounded_and_filters_match_interface_and_list() {
        let hub = EventHub::default();
        let streams: Vec<Stream> = (0..MAX_STREAMS).map(|_| hub.subscribe().unwrap()).collect();
        assert!(hub.subscribe().is_none(), "a stream past the limit is refused");
        drop(streams);
        assert!(hub.subscribe().is_some(), "closed streams free their places");
        let clock = EventClock::now();
        let e =
            Event::decode(&raw(FAMILY_V4, [9; 16], 6, 0), "eth0", &clock, |_| Some(("default".into(), "deny".into())))
                .unwrap();
        assert!(EventFilter::default().matches(&e));
        assert!(EventFilter { iface: Some("eth0".into()), list: Some("deny".into()) }.matches(&e));
        assert!(!EventFilter { iface: Some("eth1".into()), list: None }.matches(&e));
        assert!(!EventFilter { iface: None, list: Some("other".into()) }.matches(&e));
    }
}
