//! Loading the XDP program, pinning, attaching and adopting, detaching.
//!
//! Pin layout: `<root>/v<LAYOUT_VERSION>/<interface>/` holds every map (pinned by
//! name) and `link`, the XDP link. The link pin keeps the program attached when the
//! daemon dies; the next `blocker run` finds it and swaps its own program in with
//! one BPF_LINK_UPDATE, so the interface is never left unfiltered.
//! A process that changes an interface's pins holds an exclusive flock on its
//! directory for as long as it does.

use std::{
    ffi::CString,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use blocker_common::{classifier::Shape, map_names, GEN_POOL6_MAP, GEN_POOL_MAP, LAYOUT_VERSION, PROGRAM_NAME};

/// The XDP object built from blocker-ebpf by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/blocker"));

pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/blocker";
pub const LINK_PIN: &str = "link";
/// aya-log's ring buffer.
const EBPF_LOG_MAP: &str = "AYA_LOGS";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// How to attach: `Auto` tries native (driver) mode and falls back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Auto,
    Native,
    Generic,
}

/// The directory of this map layout's pins: `<root>/v<LAYOUT_VERSION>`.
pub fn layout_dir(root: &Path) -> PathBuf {
    root.join(format!("v{LAYOUT_VERSION}"))
}

/// The pin directory of one interface.
pub fn iface_dir(root: &Path, iface: &str) -> PathBuf {
    layout_dir(root).join(iface)
}

/// Refuses early, with what to do, when the process lacks the capabilities.
pub fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON; the verifier allows the
    // program's packet pointer arithmetic only with CAP_PERFMON.
    if !(has(CAP_NET_ADMIN) && (has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)))) {
        bail!(
            "blocker needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, \
             to load XDP programs and use pinned maps: run it with sudo"
        );
    }
    Ok(())
}

fn statfs_type(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: c is a valid NUL-terminated path; buf is written by the kernel.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0).then_some(buf.f_type as i64)
}

/// Makes sure `root` lives on a bpffs, mounting /sys/fs/bpf if nothing is mounted
/// there yet (many distributions do not mount it at boot).
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    let sys_bpf = Path::new("/sys/fs/bpf");
    if root.starts_with(sys_bpf) && statfs_type(sys_bpf) != Some(BPF_FS_MAGIC) {
        let src = CString::new("bpf")?;
        let dst = CString::new("/sys/fs/bpf")?;
        // SAFETY: valid NUL-terminated strings, no data argument.
        let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            bail!(
                "no bpffs on /sys/fs/bpf and mounting one failed ({}): mount it \
                 (`mount -t bpf bpf /sys/fs/bpf`) or give blocker CAP_SYS_ADMIN",
                std::io::Error::last_os_error()
            );
        }
        log::info!("mounted bpffs on /sys/fs/bpf");
    }
    check_pin_root(root)
}

/// Refuses a pin root that is not on a bpffs (below /sys/fs/bpf, which `run`
/// mounts if it must, is accepted). `check-config` applies it too.
pub fn check_pin_root(root: &Path) -> Result<()> {
    if root.starts_with("/sys/fs/bpf") && statfs_type(Path::new("/sys/fs/bpf")) != Some(BPF_FS_MAGIC) {
        return Ok(()); // `run` mounts a bpffs there first
    }
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if statfs_type(&probe) != Some(BPF_FS_MAGIC) {
        bail!("{} is not on a bpffs: pins need one (mount -t bpf bpf DIR)", root.display());
    }
    Ok(())
}

/// How long the pins under a root last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinLife {
    /// The bpffs is mounted in PID 1's mount namespace (at this mount point): pins
    /// outlive blocker.
    Lasting { mount_point: String },
    /// The bpffs is mounted only in blocker's own mount namespace (for example one
    /// that `ip netns exec` or a unit's PrivateMounts= made): its pins, and the
    /// attachment they hold, vanish with that namespace.
    Private,
    /// PID 1's mounts could not be read (hidepid=, a restricted /proc).
    Unknown { why: String },
}

/// Finds out whether pins under `root` (on a bpffs, see `ensure_bpffs`) outlive
/// this process: a bpffs superblock lives as long as it is mounted somewhere, and
/// PID 1's mount namespace lasts as long as the host (or the container). The
/// mount is found by its device number in /proc/1/mountinfo, which also matches
/// a mount that propagated there from blocker's namespace.
pub fn pin_life(root: &Path) -> PinLife {
    use std::os::unix::fs::MetadataExt as _;
    let mut probe = root.to_path_buf();
    while !probe.exists() && probe.pop() {}
    let dev = match std::fs::metadata(&probe) {
        Ok(m) => m.dev(),
        Err(e) => return PinLife::Unknown { why: format!("cannot stat {}: {e}", probe.display()) },
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major}:{minor}");
    let mountinfo = match std::fs::read_to_string("/proc/1/mountinfo") {
        Ok(text) => text,
        Err(e) => return PinLife::Unknown { why: format!("cannot read /proc/1/mountinfo: {e}") },
    };
    for line in mountinfo.lines() {
        // "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS... - FSTYPE SOURCE OPTIONS"
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = fields.iter().position(|f| *f == "-").and_then(|i| fields.get(i + 1));
        if fields.get(2) == Some(&want.as_str()) && fstype == Some(&"bpf") {
            return PinLife::Lasting { mount_point: fields.get(4).unwrap_or(&"?").to_string() };
        }
    }
    PinLife::Private
}

/// Refuses to start when the pins would not outlive blocker and the operator
/// relies on them (no --detach-on-exit): blocker never claims a persistence it
/// does not have.
pub fn check_pin_life(root: &Path, detach_on_exit: bool) -> Result<PinLife> {
    let life = pin_life(root);
    match &life {
        PinLife::Lasting { mount_point } => {
            log::debug!("pins under {} last: bpffs at {mount_point} in PID 1's mounts", root.display())
        }
        PinLife::Private if detach_on_exit => log::info!(
            "{}: this bpffs is mounted only in blocker's own mount namespace; that is enough with \
             --detach-on-exit, which detaches on exit anyway",
            root.display()
        ),
        PinLife::Private => bail!(
            "{}: this bpffs is mounted only in blocker's own mount namespace, not in PID 1's: its pins, and so \
             the attachment, would vanish when blocker exits, and the interface would pass everything. \
             Run blocker in the host's mount namespace (`nsenter --net=/run/netns/NAME blocker ...`, not \
             `ip netns exec`, which remounts /sys privately; no PrivateMounts= in a unit), or give --pin-root \
             a directory on a bpffs mounted in the host's namespace, or pass --detach-on-exit if nothing \
             should outlive blocker",
            root.display()
        ),
        PinLife::Unknown { why } => log::warn!(
            "{}: cannot tell whether the pins outlive blocker ({why}); they last only as long as this bpffs \
             stays mounted",
            root.display()
        ),
    }
    Ok(life)
}

/// The pin directory of `iface` under `root`, made safe to trust. Every level
/// (the root, `v<LAYOUT_VERSION>`, the interface's) must be a directory owned by
/// this user and closed to others: a missing one is created 0700, one of ours
/// that others could enter is set to 0700 (with a warning), and one owned by
/// another user is refused, as is any entry of the interface's directory that is
/// not ours. Otherwise a local user could plant pins, delete the link pin, or hold
/// the directory lock (`PinLock`).
pub fn secure_pin_dir(root: &Path, iface: &str) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let dir = iface_dir(root, iface);
    let refuse_owner = |path: &Path, uid: u32| {
        anyhow!(
            "{}: owned by uid {uid}, not by blocker's user (uid {euid}): another user may have put pins \
             there; remove it (rm -r {}) and start blocker again",
            path.display(),
            path.display()
        )
    };
    for level in [root.to_path_buf(), layout_dir(root), dir.clone()] {
        match std::fs::symlink_metadata(&level) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&level)
                    .with_context(|| format!("cannot create {}", level.display()))?;
            }
            Err(e) => return Err(anyhow!(e).context(format!("cannot inspect {}", level.display()))),
            Ok(meta) => {
                if !meta.file_type().is_dir() {
                    bail!(
                        "{}: not a directory (blocker keeps its pins there): remove it and start blocker again",
                        level.display()
                    );
                }
                if meta.uid() != euid {
                    return Err(refuse_owner(&level, meta.uid()));
                }
                if meta.mode() & 0o077 != 0 {
                    std::fs::set_permissions(&level, std::fs::Permissions::from_mode(0o700))
                        .with_context(|| format!("cannot set {} to mode 0700", level.display()))?;
                    log::warn!(
                        "{}: was mode {:o}, open to other users; set to 0700",
                        level.display(),
                        meta.mode() & 0o7777
                    );
                }
            }
        }
    }
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.uid() != euid {
            return Err(refuse_owner(&entry.path(), meta.uid()));
        }
    }
    Ok(dir)
}

/// An exclusive lock on an interface's pin directory, held until dropped.
pub struct PinLock {
    _dir: File,
}

impl PinLock {
    pub fn acquire(dir: &Path, iface: &str) -> Result<Self> {
        let file = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "another blocker process is managing {iface} (it holds the lock on {}); \
                     stop it first",
                    dir.display()
                );
            }
            return Err(anyhow!(err).context(format!("cannot lock {}", dir.display())));
        }
        Ok(Self { _dir: file })
    }

    /// Another handle on the same lock (a flock holds while any handle is open).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self { _dir: self._dir.try_clone()? })
    }
}

/// Whether `iface` has a pinned link under `root` (of this layout or another):
/// an attachment from an earlier run that a start would take over.
pub fn has_pinned_link(root: &Path, iface: &str) -> bool {
    iface_dir(root, iface).join(LINK_PIN).exists()
        || other_layouts(root, iface).is_ok_and(|dirs| dirs.iter().any(|(_, d)| d.join(LINK_PIN).exists()))
}

/// The index of the device named `iface` here: None if there is none. Other
/// failures (out of file descriptors, ...) are errors, never "gone".
pub fn find_interface(iface: &str) -> std::io::Result<Option<u32>> {
    let c = CString::new(iface).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated string.
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

pub fn ifindex(iface: &str) -> Result<u32> {
    let c = CString::new(iface).map_err(|_| anyhow!("bad interface name {iface:?}"))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {iface:?} in this network namespace (see `ip link`)");
    }
    Ok(idx)
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

/// A pinned XDP link opened through the bpf syscall, for what aya does not expose:
/// the device the link is on, and a detach that holds whoever else has the link
/// open. A pinned link belongs to an ifindex, not to a name: after
/// `ip link set eth0 name eth9` it filters eth9.
struct LinkHandle(std::os::fd::OwnedFd);

fn bpf_syscall<T>(cmd: aya_obj::generated::bpf_cmd, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a live, initialised bpf_attr prefix for cmd, of the size given.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl LinkHandle {
    fn open(pin: &Path) -> Result<Self> {
        use std::os::fd::FromRawFd as _;
        #[repr(C)]
        struct ObjGet {
            pathname: u64,
            bpf_fd: u32,
            file_flags: u32,
        }
        let path = CString::new(pin.as_os_str().as_encoded_bytes())?;
        let mut attr = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
        let fd = bpf_syscall(aya_obj::generated::bpf_cmd::BPF_OBJ_GET, &mut attr)
            .with_context(|| format!("cannot open pinned link {}", pin.display()))?;
        // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// The index of the device the link filters (0 once that device is gone)
    /// and the id of the program the link runs.
    fn device_and_program(&self) -> Result<(u32, u32)> {
        use aya_obj::generated::{bpf_link_info, bpf_link_type};
        use std::os::fd::AsRawFd as _;
        #[repr(C)]
        struct InfoByFd {
            bpf_fd: u32,
            info_len: u32,
            info: u64,
        }
        // SAFETY: bpf_link_info is plain data; all zeroes is a valid value.
        let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
        let mut attr = InfoByFd {
            bpf_fd: self.0.as_raw_fd() as u32,
            info_len: std::mem::size_of::<bpf_link_info>() as u32,
            info: std::ptr::addr_of_mut!(info) as u64,
        };
        bpf_syscall(aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)
            .context("BPF_OBJ_GET_INFO_BY_FD")?;
        if info.type_ != bpf_link_type::BPF_LINK_TYPE_XDP as u32 {
            bail!("pinned link {} is not an XDP link (type {})", info.id, info.type_);
        }
        // SAFETY: the kernel fills the xdp member for an XDP link.
        Ok((unsafe { info.__bindgen_anon_1.xdp.ifindex }, info.prog_id))
    }

    /// Takes the program off the link's device, whoever else holds the link.
    fn detach(&self) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        #[repr(C)]
        struct LinkDetach {
            link_fd: u32,
        }
        let mut attr = LinkDetach { link_fd: self.0.as_raw_fd() as u32 };
        bpf_syscall(aya_obj::generated::bpf_cmd::BPF_LINK_DETACH, &mut attr).context("BPF_LINK_DETACH")?;
        Ok(())
    }
}

/// The id of the XDP program the device `ifindex` of this network namespace
/// runs (0: none), from the kernel's own answer to RTM_GETLINK (IFLA_XDP). An
/// XDP link reports only an ifindex, and a device moved to another namespace
/// can keep its index while a new device here takes the same one.
pub fn xdp_program_on(ifindex: u32) -> Result<u32> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const IFLA_XDP_HW_PROG_ID: u16 = 7;
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
        return Err(anyhow!(std::io::Error::last_os_error()).context("netlink socket"));
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
        return Err(anyhow!(std::io::Error::last_os_error()).context("netlink send"));
    }
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: buf is writable for its length.
    let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got < 0 {
        return Err(anyhow!(std::io::Error::last_os_error()).context("netlink receive"));
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
            bail!("netlink: {}", std::io::Error::from_raw_os_error(errno));
        }
        Some(t) if t == libc::RTM_NEWLINK => {}
        other => bail!("netlink: unexpected answer type {other:?}"),
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

/// Where the XDP link pinned in `dir` filters, checked against the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAt {
    /// No link pin.
    NoPin,
    /// The link's device is gone: the link is dead.
    DeviceGone,
    /// On this device of this network namespace (it runs the link's program).
    Device(u32),
    /// On a device with this index that is not the one here: another device
    /// (renamed) or a device in another network namespace.
    Elsewhere(u32),
}

pub fn link_at(dir: &Path) -> Result<LinkAt> {
    let pin = dir.join(LINK_PIN);
    if !pin.exists() {
        return Ok(LinkAt::NoPin);
    }
    let (on, prog) = LinkHandle::open(&pin)?.device_and_program()?;
    Ok(match on {
        0 => LinkAt::DeviceGone,
        i if xdp_program_on(i)? == prog => LinkAt::Device(i),
        i => LinkAt::Elsewhere(i),
    })
}

/// Whether the link pinned in `dir` is on the device named `iface` here: the
/// checked fact behind "attached" in status, stats and lookup.
pub fn attached_here(dir: &Path, iface: &str) -> bool {
    matches!(
        (find_interface(iface), link_at(dir)),
        (Ok(Some(i)), Ok(LinkAt::Device(l))) if i == l
    )
}

/// Where a link is, for messages: "eth9 (index 7)" for a device here that runs
/// it, else "a device with index 7 in another network namespace".
pub fn link_place_text(at: LinkAt) -> String {
    match at {
        LinkAt::Device(i) => match ifname(i) {
            Some(name) => format!("{name} (index {i})"),
            None => format!("index {i}"),
        },
        LinkAt::Elsewhere(i) => format!("a device with index {i} in another network namespace"),
        LinkAt::NoPin => "no link".into(),
        LinkAt::DeviceGone => "a device that is gone".into(),
    }
}

/// What a pinned link means for the device that now has the configured name.
enum PinnedLinkIs {
    /// On that device: adopt it.
    Here,
    /// Its device is gone: the link is dead.
    Stale,
    /// On another device (the old one renamed, or moved to another namespace).
    /// It is detached from there only once the device with the name is
    /// protected (`attach`): a failed attach leaves it where it is.
    Elsewhere { from: String, link: LinkHandle },
}

/// Looks at the link pinned at `pin` for `iface` (now index `want`): blocker
/// protects the device that carries the configured name, never an ifindex it
/// once had.
fn examine_pinned_link(pin: &Path, want: u32) -> Result<PinnedLinkIs> {
    let link = LinkHandle::open(pin)?;
    let (on, prog) = link.device_and_program()?;
    if on == 0 {
        return Ok(PinnedLinkIs::Stale);
    }
    // The index alone is not the device: one moved to another namespace keeps it.
    let runs_here = xdp_program_on(on)? == prog;
    if on == want && runs_here {
        return Ok(PinnedLinkIs::Here);
    }
    let at = if runs_here { LinkAt::Device(on) } else { LinkAt::Elsewhere(on) };
    Ok(PinnedLinkIs::Elsewhere { from: link_place_text(at), link })
}

/// A link on another device, to take off once the device with the name is
/// protected, and what to remove with it (its pin, or an old layout's directory).
struct Retire {
    link: LinkHandle,
    from: String,
    remove: PathBuf,
    _lock: Option<PinLock>,
}

/// Loads the XDP program with its shared maps pinned under `dir` (reusing maps
/// already pinned there) and its classifier maps created at `table_blocks` blocks
/// each (`map_names::CLASSIFIER` order), and the table's shape. `ebpf_log_level` 0 compiles every aya-log statement out. The
/// benchmark generator's address pools, which only `load_traffic_generator`
/// needs, are created with one entry.
pub fn load(dir: &Path, ebpf_log_level: u8, table_blocks: &[usize; 7], shape: Shape) -> Result<Ebpf> {
    load_object(dir, ebpf_log_level, Some((table_blocks, shape)))
}

/// `load` for the benchmark's traffic generator: its address pools at full size.
pub fn load_traffic_generator(dir: &Path) -> Result<Ebpf> {
    load_object(dir, 0, None)
}

fn load_object(dir: &Path, ebpf_log_level: u8, table: Option<(&[usize; 7], Shape)>) -> Result<Ebpf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Outlive the loader, which borrows them.
    let shape = table.map(|(_, shape)| shape);
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(dir).override_global("AYA_LOG_LEVEL", &ebpf_log_level, false);
    // Every program instance of the interface logs into the same ring buffer.
    let log_pin = dir.join(EBPF_LOG_MAP);
    loader.map_pin_path(EBPF_LOG_MAP, log_pin.as_path());
    if let Some(shape) = &shape {
        loader.override_global(map_names::V4_DIR_BITS, &shape.v4_bits, true);
        loader.override_global(map_names::V6_DIR_BITS, &shape.v6_bits, true);
    }
    if let Some((blocks, _)) = table {
        for map in [GEN_POOL_MAP, GEN_POOL6_MAP] {
            loader.map_max_entries(map, 1);
        }
        for (map, n) in map_names::CLASSIFIER.iter().zip(blocks) {
            let n = u32::try_from(*n).map_err(|_| anyhow!("classifier map {map}: {n} blocks is too many"))?;
            loader.map_max_entries(map, n);
        }
    }
    let mut ebpf = loader.load(EBPF_OBJECT).context("loading the blocker eBPF object")?;
    let prog = program_mut(&mut ebpf)?;
    prog.load().context("the kernel refused the XDP program")?;
    Ok(ebpf)
}

/// Puts the loaded program onto the XDP link pinned in `dir`, if there is one (one
/// BPF_LINK_UPDATE: atomic for every packet). A link whose interface is gone is
/// left for `attach` to replace.
pub fn swap_program(ebpf: &mut Ebpf, dir: &Path) -> Result<()> {
    let pin = dir.join(LINK_PIN);
    if !pin.exists() {
        return Ok(());
    }
    if let Err(e) = swap_into_pinned_link(program_mut(ebpf)?, &pin)? {
        log::debug!("pinned link {} is stale ({e}); the next attach replaces it", pin.display());
    }
    Ok(())
}

/// The id of the program running on the XDP link pinned in `dir`, if any (a
/// pin that is not an XDP link is an error, never read as one).
pub fn linked_program_id(dir: &Path) -> Result<Option<u32>> {
    let pin = dir.join(LINK_PIN);
    if !pin.exists() {
        return Ok(None);
    }
    Ok(Some(LinkHandle::open(&pin)?.device_and_program()?.1))
}

pub fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the eBPF object"))?
        .try_into()
        .context("program has the wrong type")
}

/// How the program ended up on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// A pinned link from an earlier run now runs our program.
    Adopted,
    /// A link pinned by a blocker of another map layout now runs our program (with
    /// our maps); the old pins are gone.
    Upgraded {
        from: String,
    },
    Native,
    Generic,
    /// The pinned link was on another device (the old one renamed): detached from
    /// it, then attached to the device with the configured name.
    Moved {
        from: String,
        then: Box<Attached>,
    },
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Attached::Adopted => "adopted the pinned attachment (program replaced atomically)".into(),
            Attached::Upgraded { from } => format!(
                "found pins of map layout {from}: replaced its program and maps atomically \
                 (one BPF_LINK_UPDATE) and removed the old pins"
            ),
            Attached::Native => "attached in native (driver) mode".into(),
            Attached::Generic => "attached in generic (skb) mode".into(),
            Attached::Moved { from, then } => {
                format!("{then} (moved off {from}, which no longer has the name)")
            }
        };
        f.write_str(&text)
    }
}

/// Puts the loaded program on `iface`: replaces the program of a pinned link if there
/// is one (of this layout, or of another layout, whose pins are then removed),
/// otherwise attaches anew and pins the link.
pub fn attach(ebpf: &mut Ebpf, root: &Path, iface: &str, mode: AttachMode) -> Result<Attached> {
    let dir = iface_dir(root, iface);
    let link_pin = dir.join(LINK_PIN);
    let want = ifindex(iface)?;
    let prog = program_mut(ebpf)?;
    let mut retire: Vec<Retire> = Vec::new();
    if link_pin.exists() {
        match examine_pinned_link(&link_pin, want)? {
            PinnedLinkIs::Here => match swap_into_pinned_link(prog, &link_pin)? {
                Ok(_) => return Ok(Attached::Adopted),
                Err(e) => {
                    log::warn!("pinned link on {iface} is stale ({e}); attaching anew");
                    std::fs::remove_file(&link_pin)?;
                }
            },
            PinnedLinkIs::Stale => {
                // The device behind the old link is gone: start afresh.
                log::warn!("pinned link on {iface} is stale (its device is gone); attaching anew");
                std::fs::remove_file(&link_pin)?;
            }
            PinnedLinkIs::Elsewhere { from, link } => {
                retire.push(Retire { link, from, remove: link_pin.clone(), _lock: None })
            }
        }
    }
    for (version, old_dir) in other_layouts(root, iface)? {
        // An older (or newer) blocker may still run there: never take it over.
        let old_lock = PinLock::acquire(&old_dir, iface)?;
        let old_link = old_dir.join(LINK_PIN);
        if old_link.exists() {
            match examine_pinned_link(&old_link, want)? {
                PinnedLinkIs::Here => match swap_into_pinned_link(prog, &old_link)? {
                    Ok(id) => {
                        let fd_link =
                            FdLink::try_from(prog.take_link(id)?).context("XDP attachment is not a bpf_link")?;
                        fd_link.pin(&link_pin).with_context(|| format!("cannot pin link at {}", link_pin.display()))?;
                        remove_pins(&old_dir)?;
                        return Ok(Attached::Upgraded { from: version });
                    }
                    Err(e) => log::warn!("pinned link in {} is stale ({e}); removing it", old_dir.display()),
                },
                PinnedLinkIs::Stale => log::warn!("pinned link in {} is stale; removing it", old_dir.display()),
                PinnedLinkIs::Elsewhere { from, link } => {
                    retire.push(Retire { link, from, remove: old_dir.clone(), _lock: Some(old_lock) });
                    continue;
                }
            }
        }
        remove_pins(&old_dir)?;
    }
    let tries: &[(XdpMode, Attached)] = match mode {
        AttachMode::Native => &[(XdpMode::Driver, Attached::Native)],
        AttachMode::Generic => &[(XdpMode::Skb, Attached::Generic)],
        AttachMode::Auto => &[(XdpMode::Driver, Attached::Native), (XdpMode::Skb, Attached::Generic)],
    };
    let mut last_err = None;
    for (xdp_mode, result) in tries {
        match prog.attach(iface, *xdp_mode) {
            Ok(id) => {
                let link = prog.take_link(id)?;
                let fd_link = FdLink::try_from(link).context("XDP attachment is not a bpf_link")?;
                // The device with the name is protected now: only from here on is
                // the old attachment taken off the other device.
                if retire.is_empty() {
                    fd_link.pin(&link_pin).with_context(|| format!("cannot pin link at {}", link_pin.display()))?;
                    return Ok(result.clone());
                }
                // Pinned under a new name first (bpffs names take no '.'): the new
                // link outlives this process from now on, whatever happens to the
                // old one.
                let new_pin = dir.join(format!("{LINK_PIN}_new"));
                let _ = std::fs::remove_file(&new_pin);
                fd_link.pin(&new_pin).with_context(|| format!("cannot pin link at {}", new_pin.display()))?;
                let mut moved_from = None;
                for r in retire {
                    r.link.detach().with_context(|| format!("cannot detach the pinned link from {}", r.from))?;
                    if r.remove.is_dir() {
                        remove_pins(&r.remove)?;
                    } else {
                        std::fs::remove_file(&r.remove)
                            .with_context(|| format!("cannot remove {}", r.remove.display()))?;
                    }
                    log::warn!(
                        "{iface}: the pinned attachment was on {}, not on the device named {iface} here (renamed \
                         or moved?); {iface} (index {want}) is protected now, and the program is off {}",
                        r.from,
                        r.from
                    );
                    moved_from = Some(r.from);
                }
                std::fs::rename(&new_pin, &link_pin)
                    .with_context(|| format!("cannot rename {} to {}", new_pin.display(), link_pin.display()))?;
                return Ok(match moved_from {
                    Some(from) => Attached::Moved { from, then: Box::new(result.clone()) },
                    None => result.clone(),
                });
            }
            Err(e) => {
                log::debug!("attach {xdp_mode:?} on {iface} failed: {e}");
                last_err = Some(e);
            }
        }
    }
    let err =
        anyhow!(last_err.expect("at least one mode tried")).context(format!("cannot attach XDP program to {iface}"));
    if let Some(r) = retire.first() {
        return Err(err.context(format!("the earlier attachment stays on {}", r.from)));
    }
    Err(err)
}

/// Replaces the program of the XDP link pinned at `pin` with `prog` (one
/// BPF_LINK_UPDATE). The inner error means the link is stale (its interface is gone).
fn swap_into_pinned_link(
    prog: &mut Xdp,
    pin: &Path,
) -> Result<Result<aya::programs::xdp::XdpLinkId, aya::programs::ProgramError>> {
    let pinned = PinnedLink::from_pin(pin).with_context(|| format!("cannot open pinned link {}", pin.display()))?;
    let link = XdpLink::try_from(FdLink::from(pinned))?;
    Ok(prog.attach_to_link(link))
}

/// Removes program, link and pins of `iface`.
pub fn detach(root: &Path, iface: &str) -> Result<()> {
    let dir = iface_dir(root, iface);
    if !dir.exists() {
        bail!("nothing to detach: blocker has no pins for {iface} under {}", dir.display());
    }
    let _lock = PinLock::acquire(&dir, iface)?;
    remove_pins(&dir)
}

/// Deletes a pin directory. Unpinning the link drops its last reference, which
/// detaches the program (unless another pin holds the link).
pub fn remove_pins(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    std::fs::remove_dir(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(())
}

/// Pin directories of `iface` under layout versions other than ours: ("vN", dir).
fn other_layouts(root: &Path, iface: &str) -> Result<Vec<(String, PathBuf)>> {
    let ours = format!("v{LAYOUT_VERSION}");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(out) };
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        let is_layout = name.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let dir = root.join(&name).join(iface);
        if is_layout && name != ours && dir.is_dir() {
            out.push((name, dir));
        }
    }
    out.sort();
    Ok(out)
}

/// Interfaces that have pins under `root`.
pub fn pinned_interfaces(root: &Path) -> Result<Vec<String>> {
    let dir = layout_dir(root);
    let mut out = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                out.push(e?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", dir.display()))),
    }
    out.sort();
    Ok(out)
}
