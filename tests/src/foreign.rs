//! Programs of the test's own, made from two instructions and attached with
//! raw bpf(2) calls: another program on blocker's hooks (a CNI, a shaper, an
//! XDP tool), one that passes every packet. On the TCX egress, TC_ACT_OK ends
//! the chain; on XDP, the device is taken.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{bail, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_XDP: u32 = 37;
/// BPF_F_BEFORE: before every program of the hook (no anchor given).
const BPF_F_BEFORE: u32 = 1 << 3;

/// The program, attached to a device while it lives.
pub struct Foreign {
    _link: OwnedFd,
    _program: OwnedFd,
    pub id: u32,
}

/// One bpf(2) call with `attr` (zero-padded to the kernel's union bpf_attr).
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> Result<i32> {
    // SAFETY: attr is 128 writable bytes, more than any command here reads or
    // writes; the kernel checks the rest of the union is zero.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if r < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// Loads `r0 = 0 (TC_ACT_OK); exit` and attaches it to the tc egress of the
/// device `iface` of network namespace `ns`: `first` before every program
/// there, else after them.
pub fn attach_passing_egress(ns: &str, iface: &str, first: bool) -> Result<Foreign> {
    let flags = if first { BPF_F_BEFORE } else { 0 };
    // mov64 r0, 0 (TC_ACT_OK); exit
    attach(ns, iface, BPF_PROG_TYPE_SCHED_CLS, 0, BPF_TCX_EGRESS, flags)
}

/// Loads `r0 = 2 (XDP_PASS); exit` and attaches it (a bpf_link) to the XDP hook
/// of device `iface` of network namespace `ns`.
pub fn attach_passing_xdp(ns: &str, iface: &str) -> Result<Foreign> {
    attach(ns, iface, BPF_PROG_TYPE_XDP, 2, BPF_XDP, 0)
}

/// A program of type `prog_type` that returns `verdict`, linked to the hook
/// `attach_type` of `iface` in `ns` with `flags`.
fn attach(ns: &str, iface: &str, prog_type: u32, verdict: u8, attach_type: u32, flags: u32) -> Result<Foreign> {
    let iface = std::ffi::CString::new(iface)?;
    crate::http::in_netns(ns, move || -> Result<Foreign> {
        // mov64 r0, verdict; exit
        let insns: [u64; 2] = [0x0000_0000_0000_00b7 | u64::from(verdict) << 32, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let name = *b"test_pass\0\0\0\0\0\0\0";
        let mut attr = [0u64; 16];
        attr[0] = u64::from(prog_type) | (insns.len() as u64) << 32;
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        // prog_name at byte 48 (after log_level, log_size, log_buf, kern_version, prog_flags).
        attr[6] = u64::from_ne_bytes(name[..8].try_into()?);
        attr[7] = u64::from_ne_bytes(name[8..].try_into()?);
        // SAFETY: a new fd the kernel returned, owned from here on.
        let program = unsafe { OwnedFd::from_raw_fd(bpf(BPF_PROG_LOAD, &mut attr)?) };
        // SAFETY: reads a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {iface:?}: {}", std::io::Error::last_os_error());
        }
        let mut attr = [0u64; 16];
        attr[0] = program.as_raw_fd() as u64 | u64::from(ifindex) << 32;
        attr[1] = u64::from(attach_type) | u64::from(flags) << 32;
        // SAFETY: as above.
        let link = unsafe { OwnedFd::from_raw_fd(bpf(BPF_LINK_CREATE, &mut attr)?) };
        // struct bpf_prog_info: type, then id.
        let mut info = [0u64; 32];
        let mut attr = [0u64; 16];
        attr[0] = program.as_raw_fd() as u64 | (std::mem::size_of_val(&info) as u64) << 32;
        attr[1] = info.as_mut_ptr() as u64;
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        let id = (info[0] >> 32) as u32;
        Ok(Foreign { _link: link, _program: program, id })
    })?
}
