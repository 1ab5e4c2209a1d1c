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
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const IFLA_XDP_HW_PROG_ID: u16 = 7;
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
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Request>() as u32,
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
    };
    // SAFETY: request is a live value of the size given.
    let sent =
        unsafe { libc::send(sock.as_raw_fd(), std::ptr::addr_of!(request).cast(), std::mem::size_of::<Request>(), 0) };
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
                return Ok(0); // no such device here
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
    // Attributes follow the 16-byte header and the 16-byte ifinfomsg, 4-aligned.
    let end = (u32_at(msg, 0).unwrap_or(0) as usize).min(msg.len());
    let mut at = 32;
    while at + 4 <= end {
        let (len, kind) = (u16_at(msg, at).unwrap_or(0) as usize, u16_at(msg, at + 2).unwrap_or(0) & 0x3fff);
        if len < 4 {
            break;
        }
        if kind == libc::IFLA_XDP {
            let mut id = 0;
            let mut inner = at + 4;
            while inner + 4 <= (at + len).min(end) {
                let (ilen, ikind) = (u16_at(msg, inner).unwrap_or(0) as usize, u16_at(msg, inner + 2).unwrap_or(0));
                if ilen < 4 {
                    break;
                }
                if matches!(ikind, IFLA_XDP_PROG_ID | IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID | IFLA_XDP_HW_PROG_ID)
                {
                    id = id.max(u32_at(msg, inner + 4).unwrap_or(0));
                }
                inner += (ilen + 3) & !3;
            }
            return Ok(id);
        }
        at += (len + 3) & !3;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
