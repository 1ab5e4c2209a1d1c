//! Network devices: names and indexes, and which XDP program a device runs (asked
//! of the kernel over netlink).

use std::ffi::CString;

/// Why a device cannot be found or asked about.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no interface named {name:?} in this network namespace (see `ip link`)")]
    NoSuchInterface { name: String },
    #[error("cannot look up interface {name:?}: {error}")]
    Lookup { name: String, error: std::io::Error },
    #[error("cannot ask the kernel which XDP program device {ifindex} runs (netlink {step}): {error}")]
    Netlink { ifindex: u32, step: &'static str, error: std::io::Error },
    #[error("cannot ask the kernel which XDP program device {ifindex} runs: unexpected netlink answer type {kind:?}")]
    NetlinkAnswer { ifindex: u32, kind: Option<u16> },
    #[error("cannot read the driver statistics of {name:?} (ethtool {step}): {error}")]
    Ethtool { name: String, step: &'static str, error: std::io::Error },
}

/// The index of the device named `iface` here: None if there is none. Other
/// failures (out of file descriptors, ...) are errors, never "gone".
pub fn find_interface(iface: &str) -> std::io::Result<Option<u32>> {
    let c = CString::new(iface).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: if_nametoindex only reads the NUL-terminated name, which `c` owns
    // for the whole call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx != 0 {
        return Ok(Some(idx));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

/// The index of the device named `iface` here; its absence is an error.
pub fn ifindex(iface: &str) -> Result<u32, DeviceError> {
    match find_interface(iface) {
        Ok(Some(index)) => Ok(index),
        Ok(None) => Err(DeviceError::NoSuchInterface { name: iface.to_owned() }),
        // A name with a NUL byte names no device.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            Err(DeviceError::NoSuchInterface { name: iface.to_owned() })
        }
        Err(error) => Err(DeviceError::Lookup { name: iface.to_owned(), error }),
    }
}

/// The name of the device with index `index`, if there is one.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// The id of the XDP program the device `ifindex` of this network namespace
/// runs (0: none), from the kernel's own answer to RTM_GETLINK (IFLA_XDP). An
/// XDP link reports only an ifindex, and a device moved to another namespace
/// can keep its index while a new device here takes the same one.
pub fn xdp_program_on(ifindex: u32) -> Result<u32, DeviceError> {
    Ok(link_attributes(ifindex, None)?.map_or(0, |a| xdp_program_of(&a)))
}

const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_TARGET_NETNSID: u16 = 46;

/// The XDP program id among a device's attributes (0: none).
fn xdp_program_of(attributes: &[(u16, Vec<u8>)]) -> u32 {
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const IFLA_XDP_HW_PROG_ID: u16 = 7;
    let Some((_, xdp)) = attributes.iter().find(|(k, _)| *k == libc::IFLA_XDP) else { return 0 };
    attributes_of(xdp)
        .iter()
        .filter(|(k, _)| {
            matches!(*k, IFLA_XDP_PROG_ID | IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID | IFLA_XDP_HW_PROG_ID)
        })
        .filter_map(|(_, v)| v.get(..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])))
        .max()
        .unwrap_or(0)
}

/// Netlink attributes: (type without flags, payload), one after another.
type Attributes = Vec<(u16, Vec<u8>)>;

/// Netlink attributes (type without flags, payload) one after another.
fn attributes_of(mut bytes: &[u8]) -> Attributes {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
        if len < 4 || len > bytes.len() {
            break;
        }
        out.push((kind, bytes[4..len].to_vec()));
        bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
    }
    out
}

/// The other end of a veth pair: its index, in the namespace of `nsid` (None:
/// this one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VethPeer {
    pub ifindex: u32,
    pub nsid: Option<i32>,
}

/// The peer of device `ifindex` if it is a veth (None: another kind of
/// device, or gone).
pub fn veth_peer(ifindex: u32) -> Result<Option<VethPeer>, DeviceError> {
    let Some(attributes) = link_attributes(ifindex, None)? else { return Ok(None) };
    let get = |kind: u16| attributes.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice());
    let is_veth = get(IFLA_LINKINFO)
        .map(attributes_of)
        .is_some_and(|info| info.iter().any(|(k, v)| *k == IFLA_INFO_KIND && v.starts_with(b"veth")));
    let word = |v: &[u8]| v.get(..4).map(|b| [b[0], b[1], b[2], b[3]]);
    let peer = get(IFLA_LINK).and_then(word).map(u32::from_ne_bytes).filter(|i| *i != 0);
    let nsid = get(IFLA_LINK_NETNSID).and_then(word).map(i32::from_ne_bytes).filter(|n| *n >= 0);
    Ok(match (is_veth, peer) {
        (true, Some(ifindex)) => Some(VethPeer { ifindex, nsid }),
        _ => None,
    })
}

/// The XDP program id the peer of a veth runs (0: none; None: the peer cannot
/// be asked about).
pub fn peer_xdp_program(peer: VethPeer) -> Result<Option<u32>, DeviceError> {
    Ok(link_attributes(peer.ifindex, peer.nsid)?.map(|a| xdp_program_of(&a)))
}

/// The attributes of the kernel's RTM_GETLINK answer for device `ifindex`, of
/// this namespace or (`nsid`) of the namespace this one knows by that id.
/// None: no such device.
fn link_attributes(ifindex: u32, nsid: Option<i32>) -> Result<Option<Attributes>, DeviceError> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let netlink = |step| DeviceError::Netlink { ifindex, step, error: std::io::Error::last_os_error() };
    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        family: u8,
        pad: u8,
        kind: u16,
        index: i32,
        flags: u32,
        change: u32,
        /// IFLA_TARGET_NETNSID, when asked of another namespace.
        attr_len: u16,
        attr_kind: u16,
        attr_nsid: i32,
    }
    // SAFETY: socket has no memory preconditions; the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(netlink("socket"));
    }
    // SAFETY: a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: a valid timeval of the size given.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(timeout).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let len = if nsid.is_some() { std::mem::size_of::<Request>() } else { std::mem::size_of::<Request>() - 8 };
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: len as u32,
            nlmsg_type: libc::RTM_GETLINK,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: libc::AF_UNSPEC as u8,
        pad: 0,
        kind: 0,
        index: ifindex as i32,
        flags: 0,
        change: 0,
        attr_len: 8,
        attr_kind: IFLA_TARGET_NETNSID,
        attr_nsid: nsid.unwrap_or(0),
    };
    // SAFETY: request is a live value of at least `len` bytes.
    let sent = unsafe { libc::send(sock.as_raw_fd(), std::ptr::addr_of!(request).cast(), len, 0) };
    if sent < 0 {
        return Err(netlink("send"));
    }
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: buf is writable for its length.
    let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got < 0 {
        return Err(netlink("receive"));
    }
    let msg = &buf[..got as usize];
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_ne_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], at: usize| b.get(at..at + 4).map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]));
    match u16_at(msg, 4) {
        Some(t) if t == libc::NLMSG_ERROR as u16 => {
            let errno = u32_at(msg, 16).map_or(0, |e| -(e as i32));
            if errno == libc::ENODEV {
                return Ok(None); // no such device there
            }
            return Err(DeviceError::Netlink {
                ifindex,
                step: "answer",
                error: std::io::Error::from_raw_os_error(errno),
            });
        }
        Some(t) if t == libc::RTM_NEWLINK => {}
        kind => return Err(DeviceError::NetlinkAnswer { ifindex, kind }),
    }
    // Attributes follow the 16-byte header and the 16-byte ifinfomsg.
    let end = (u32_at(msg, 0).unwrap_or(0) as usize).min(msg.len());
    Ok(Some(attributes_of(msg.get(32..end).unwrap_or_default())))
}

/// Why device `iface` may drop the frames an XDP program sends back out of it
/// with XDP_TX (None: nothing known against it). A veth delivers them to its
/// peer only when the peer takes XDP frames: it runs an XDP program of its own
/// (or has GRO on, which this check cannot see when the peer is in another
/// namespace); otherwise the veth drops them all and counts them in its
/// `xdp_tx_errors`.
pub fn xdp_tx_risk(iface: &str) -> Option<String> {
    let index = ifindex(iface).ok()?;
    let peer = veth_peer(index).ok()??;
    match peer_xdp_program(peer) {
        Ok(Some(0)) => {
            let peer_name = match peer.nsid {
                None => ifname(peer.ifindex).map_or(format!("index {}", peer.ifindex), |n| format!("{n:?}")),
                Some(ns) => format!("index {} in the namespace of id {ns}", peer.ifindex),
            };
            Some(format!(
                "{iface} is a veth whose peer ({peer_name}) runs no XDP program: the veth drops the frames XDP_TX \
                 sends, the answers to rejected packets, unless the peer has GRO on; attach an XDP program to the \
                 peer or turn its GRO on (`ethtool -K PEER gro on`), or use deny lists there. `blocker stats` shows \
                 the answers the driver lost"
            ))
        }
        _ => None,
    }
}

/// What a device's driver says of the frames XDP programs send back out of it
/// (XDP_TX, as a reject's answers are sent), from its ethtool statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XdpTxCounters {
    /// The driver's name (`veth`, `mlx5_core`, ...).
    pub driver: String,
    /// XDP_TX frames sent, summed over queues (None: the driver counts none).
    pub sent: Option<u64>,
    /// XDP_TX frames the driver could not send, summed over queues: veth's
    /// `xdp_tx_errors`, mlx5's `xdp_tx_err` and `xdp_tx_full`, ... (None: the
    /// driver counts none). Counted since the device came up.
    pub lost: Option<u64>,
}

/// Whether an ethtool statistic counts XDP_TX frames: `Some(true)` lost ones,
/// `Some(false)` sent ones, None neither.
fn xdp_tx_stat(name: &str) -> Option<bool> {
    let name = name.to_ascii_lowercase();
    if !name.contains("xdp_tx") {
        return None;
    }
    Some(["err", "drop", "full"].iter().any(|w| name.contains(w)))
}

/// The XDP_TX counters of device `iface` (SIOCETHTOOL: driver info, the
/// statistics' names, their values).
pub fn xdp_tx_counters(iface: &str) -> Result<XdpTxCounters, DeviceError> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSTATS: u32 = 0x1d;
    const ETH_SS_STATS: u32 = 1;
    const STRING_LEN: usize = 32;
    /// Most statistics read: drivers have tens to a few thousand.
    const MAX_STATS: usize = 1 << 16;
    let error = |step: &'static str| DeviceError::Ethtool {
        name: iface.to_owned(),
        step,
        error: std::io::Error::last_os_error(),
    };
    // SAFETY: socket has no memory preconditions; the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(error("socket"));
    }
    // SAFETY: a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IF_NAMESIZE],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    let mut name = [0u8; libc::IF_NAMESIZE];
    if iface.len() >= name.len() || iface.bytes().any(|b| b == 0) {
        return Err(DeviceError::NoSuchInterface { name: iface.to_owned() });
    }
    name[..iface.len()].copy_from_slice(iface.as_bytes());
    // One ethtool command over a buffer of u64 words (aligned for every layout).
    let ask = |buf: &mut [u64], step: &'static str| -> Result<(), DeviceError> {
        let mut req = IfReq { name, data: buf.as_mut_ptr().cast(), _pad: [0; 16] };
        // SAFETY: `req` names the device and points at `buf`, which is large
        // enough for the command's answer (sized by the caller from n_stats).
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, std::ptr::addr_of_mut!(req)) };
        if r < 0 {
            return Err(error(step));
        }
        Ok(())
    };
    let bytes = |buf: &[u64]| -> Vec<u8> { buf.iter().flat_map(|w| w.to_ne_bytes()).collect() };
    // struct ethtool_drvinfo: 196 bytes; driver at 4, n_stats at 180.
    let mut info = vec![0u64; 196usize.div_ceil(8)];
    info[0] = u64::from(ETHTOOL_GDRVINFO);
    ask(&mut info, "driver info")?;
    let info = bytes(&info);
    let driver = String::from_utf8_lossy(&info[4..36]).trim_end_matches('\0').to_owned();
    let n = u32::from_ne_bytes([info[180], info[181], info[182], info[183]]) as usize;
    let mut out = XdpTxCounters { driver, sent: None, lost: None };
    if n == 0 || n > MAX_STATS {
        return Ok(out);
    }
    // struct ethtool_gstrings: cmd, string_set, len, then len names.
    let mut names = vec![0u64; (12 + n * STRING_LEN).div_ceil(8)];
    names[0] = u64::from(ETHTOOL_GSTRINGS) | u64::from(ETH_SS_STATS) << 32;
    names[1] = n as u64;
    ask(&mut names, "statistics names")?;
    let names = bytes(&names);
    // struct ethtool_stats: cmd, n_stats, then n u64 values.
    let mut values = vec![0u64; 1 + n];
    values[0] = u64::from(ETHTOOL_GSTATS) | (n as u64) << 32;
    ask(&mut values, "statistics")?;
    for i in 0..n {
        let raw = &names[12 + i * STRING_LEN..12 + (i + 1) * STRING_LEN];
        let stat = String::from_utf8_lossy(raw.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
        match xdp_tx_stat(&stat) {
            Some(true) => *out.lost.get_or_insert(0) += values[1 + i],
            Some(false) => *out.sent.get_or_insert(0) += values[1 + i],
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_tx_statistics_are_told_from_their_names() {
        for (name, want) in [
            ("rx_queue_0_xdp_tx", Some(false)),
            ("rx_queue_3_xdp_tx_errors", Some(true)),
            ("rx_xdp_tx_xmit", Some(false)),
            ("rx_xdp_tx_full", Some(true)),
            ("rx_xdp_tx_err", Some(true)),
            ("tx_queue_0_xdp_tx_drops", Some(true)),
            ("tx_queue_0_xdp_xmit_errors", None),
            ("rx_queue_0_xdp_drops", None),
            ("peer_ifindex", None),
        ] {
            assert_eq!(xdp_tx_stat(name), want, "{name}");
        }
    }

    #[test]
    fn an_absent_interface_is_named_in_the_error() {
        for name in ["blk-absent0", "bad\0name"] {
            match ifindex(name) {
                Err(DeviceError::NoSuchInterface { name: got }) => assert_eq!(got, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert_eq!(find_interface("blk-absent0").unwrap(), None);
    }
}
