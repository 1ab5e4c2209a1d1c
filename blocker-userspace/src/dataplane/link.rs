//! The XDP link of an interface: attaching (or adopting a pinned link), swapping
//! the program on it, checking where it is, and detaching.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        ProgramError, Xdp, XdpMode,
    },
    Ebpf,
};

use super::{
    device::{find_interface, ifindex, ifname, xdp_program_on, DeviceError},
    object::{program_mut, ObjectError},
    pins::{iface_dir, other_layouts, remove_pins, PinError, PinLock, LINK_PIN},
};

/// Why the program cannot be put on (or taken off) an interface.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("cannot open pinned link {path}: {error}")]
    Open { path: PathBuf, error: std::io::Error },
    #[error("cannot ask the kernel about the link pinned at {path}: {error}")]
    Info { path: PathBuf, error: std::io::Error },
    #[error(
        "{path} holds a {what}, not a bpf link: something else pinned it there; remove it (rm {path}) and start \
         blocker again"
    )]
    NotALink { path: PathBuf, what: String },
    #[error(
        "{path} holds a bpf link of type {kind}, not an XDP link: something else pinned it there; remove it \
         (rm {path}) and start blocker again"
    )]
    NotXdp { path: PathBuf, kind: u32 },
    /// Every mode `mode` allows was refused; a link on another device (the old
    /// one renamed) stays there, still filtering.
    /// `why`: the kernel's error with its errno; `holder`: the program that
    /// holds the device, if one does, and what to do about it.
    #[error(
        "cannot attach XDP program to {iface} (xdp_mode {}): {why}{}{}",
        mode.name(),
        holder.as_ref().map(|h| format!("; {h}")).unwrap_or_default(),
        earlier.as_ref().map(|on| format!("; the earlier attachment stays on {on}")).unwrap_or_default()
    )]
    AttachRefused {
        iface: String,
        mode: AttachMode,
        error: Box<ProgramError>,
        why: String,
        holder: Option<String>,
        earlier: Option<String>,
    },
    #[error(
        "{path} holds a bpf link of type {kind}, not a tc egress (TCX) link: something else pinned it there; \
         remove it (rm {path}) and start blocker again"
    )]
    NotEgress { path: PathBuf, kind: u32 },
    #[error("cannot attach the tc egress program (outbound lists) to {iface}: {error}")]
    EgressAttach { iface: String, error: String },
    #[error("the kernel gave no handle of the XDP attachment on {iface}: {error}")]
    NoLink { iface: String, error: Box<ProgramError> },
    #[error(
        "the kernel attached the XDP program to {iface} without a bpf_link (a kernel older than 5.9?): \
         blocker needs one to keep {iface} protected across restarts"
    )]
    NotBpfLink { iface: String },
    #[error("cannot pin the link at {path}: {error}")]
    PinLink { path: PathBuf, error: aya::pin::PinError },
    #[error("cannot detach the pinned link from {from}: {error}")]
    Detach { from: String, error: std::io::Error },
    #[error("cannot {action} {path}: {error}")]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
    #[error("nothing to detach: blocker has no pins for {iface} under {dir}")]
    NothingToDetach { iface: String, dir: PathBuf },
}

impl LinkError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LinkError + 'a {
        move |error| LinkError::Io { action, path: path.to_owned(), error }
    }
}

/// How to attach: `Auto` tries native (driver) mode and falls back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Auto,
    Native,
    Generic,
}

impl AttachMode {
    pub const ALL: [AttachMode; 3] = [AttachMode::Auto, AttachMode::Native, AttachMode::Generic];
    /// The names `--xdp-mode` and the config's `xdp_mode` take.
    pub const NAMES: [&str; 3] = ["auto", "native", "generic"];

    pub const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("xdp_mode {s:?} is not one of {}", Self::NAMES.join(", ")))
    }
}

/// A pinned XDP link opened through the bpf syscall, for what aya does not expose:
/// the device the link is on, and a detach that holds whoever else has the link
/// open. A pinned link belongs to an ifindex, not to a name: after
/// `ip link set eth0 name eth9` it filters eth9.
pub(super) struct LinkHandle(std::os::fd::OwnedFd, PathBuf);

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
    pub(super) fn open(pin: &Path) -> Result<Self, LinkError> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        #[repr(C)]
        struct ObjGet {
            pathname: u64,
            bpf_fd: u32,
            file_flags: u32,
        }
        let open_error = |error| LinkError::Open { path: pin.to_owned(), error };
        let path = CString::new(pin.as_os_str().as_encoded_bytes())
            .map_err(|_| open_error(std::io::ErrorKind::InvalidInput.into()))?;
        let mut attr = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
        let fd = bpf_syscall(aya_obj::generated::bpf_cmd::BPF_OBJ_GET, &mut attr).map_err(open_error)?;
        // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        // Any bpf object can be pinned there, and the info of a map would read as
        // a link's (a per-CPU array's type has the XDP link's number).
        let kind = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(open_error)?;
        if kind.as_os_str() != "anon_inode:bpf-link" {
            let what = kind.to_string_lossy();
            let what = what.strip_prefix("anon_inode:").unwrap_or(&what).replace('-', " ");
            return Err(LinkError::NotALink { path: pin.to_owned(), what });
        }
        Ok(Self(fd, pin.to_owned()))
    }

    /// The index of the device the link filters (0 once that device is gone)
    /// and the id of the program the link runs.
    fn device_and_program(&self) -> Result<(u32, u32), LinkError> {
        use aya_obj::generated::bpf_link_type;
        let info = self.info()?;
        if info.type_ != bpf_link_type::BPF_LINK_TYPE_XDP as u32 {
            return Err(LinkError::NotXdp { path: self.1.clone(), kind: info.type_ });
        }
        // SAFETY: the kernel fills the xdp member for an XDP link.
        Ok((unsafe { info.__bindgen_anon_1.xdp.ifindex }, info.prog_id))
    }

    /// What the kernel says of the link.
    pub(super) fn info(&self) -> Result<aya_obj::generated::bpf_link_info, LinkError> {
        use aya_obj::generated::bpf_link_info;
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
            .map_err(|error| LinkError::Info { path: self.1.clone(), error })?;
        Ok(info)
    }

    /// Takes the program off the link's device, whoever else holds the link.
    pub(super) fn detach(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        #[repr(C)]
        struct LinkDetach {
            link_fd: u32,
        }
        let mut attr = LinkDetach { link_fd: self.0.as_raw_fd() as u32 };
        bpf_syscall(aya_obj::generated::bpf_cmd::BPF_LINK_DETACH, &mut attr).map(drop)
    }
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

pub fn link_at(dir: &Path) -> Result<LinkAt, LinkError> {
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
fn examine_pinned_link(pin: &Path, want: u32) -> Result<PinnedLinkIs, LinkError> {
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

/// Puts the loaded program onto the XDP link pinned in `dir`, if there is one (one
/// BPF_LINK_UPDATE: atomic for every packet). A link whose interface is gone is
/// left for `attach` to replace.
pub fn swap_program(ebpf: &mut Ebpf, dir: &Path) -> Result<(), LinkError> {
    let pin = dir.join(LINK_PIN);
    if !pin.exists() {
        return Ok(());
    }
    if let Err(e) = swap_into_pinned_link(program_mut(ebpf)?, &pin)? {
        log::debug!("pinned link {} is stale ({e}); the next attach replaces it", pin.display());
        return Ok(());
    }
    // The outbound direction follows, on the same device.
    let (on, _) = LinkHandle::open(&pin)?.device_and_program()?;
    if on != 0 {
        super::egress::sync(ebpf, dir, on)?;
    }
    Ok(())
}

/// The id of the program running on the XDP link pinned in `dir`, if any (a
/// pin that is not an XDP link is an error, never read as one).
pub fn linked_program_id(dir: &Path) -> Result<Option<u32>, LinkError> {
    let pin = dir.join(LINK_PIN);
    if !pin.exists() {
        return Ok(None);
    }
    Ok(Some(LinkHandle::open(&pin)?.device_and_program()?.1))
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
/// otherwise attaches anew and pins the link. Then the egress program (outbound
/// lists), if the instance has one, on the same device.
pub fn attach(ebpf: &mut Ebpf, root: &Path, iface: &str, mode: AttachMode) -> Result<Attached, LinkError> {
    let attached = attach_xdp(ebpf, root, iface, mode)?;
    let dir = iface_dir(root, iface);
    let (on, _) = LinkHandle::open(&dir.join(LINK_PIN))?.device_and_program()?;
    super::egress::sync(ebpf, &dir, on)?;
    Ok(attached)
}

fn attach_xdp(ebpf: &mut Ebpf, root: &Path, iface: &str, mode: AttachMode) -> Result<Attached, LinkError> {
    let dir = iface_dir(root, iface);
    let link_pin = dir.join(LINK_PIN);
    let want = ifindex(iface)?;
    let prog = program_mut(ebpf)?;
    let mut retire: Vec<Retire> = Vec::new();
    if let Some(adopted) = adopt_pinned_link(prog, iface, &link_pin, want, &mut retire)? {
        return Ok(adopted);
    }
    if let Some(upgraded) = adopt_other_layouts(prog, root, iface, &link_pin, want, &mut retire)? {
        return Ok(upgraded);
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
                let fd_link = take_fd_link(prog, id, iface)?;
                return pin_new_link(fd_link, &link_pin, retire, iface, want, result.clone());
            }
            Err(e) => {
                log::debug!("attach {xdp_mode:?} on {iface} failed: {e}");
                last_err = Some(e);
            }
        }
    }
    let error = last_err.expect("at least one mode tried");
    Err(LinkError::AttachRefused {
        iface: iface.to_owned(),
        mode,
        why: error_chain(&error),
        holder: device_holder(iface, want),
        error: Box::new(error),
        earlier: retire.into_iter().next().map(|r| r.from),
    })
}

/// An error with the errors under it (aya's syscall errors say the call, and
/// their source the errno).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// Which program holds device `ifindex`, and what to do: blocker never
/// replaces an XDP program it did not attach.
fn device_holder(iface: &str, ifindex: u32) -> Option<String> {
    let id = super::device::xdp_program_on(ifindex).ok().filter(|id| *id != 0)?;
    let name = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    Some(format!(
        "the device is busy: XDP program {id}{name} runs on it, and blocker does not replace a program it did not \
         attach; take that one off (`bpftool net detach xdp dev {iface}`, or `ip link set dev {iface} xdp off`, \
         or the tool that attached it), then start blocker again"
    ))
}

/// The bpf_link of a new attachment, owned from here on (to pin it).
fn take_fd_link(prog: &mut Xdp, id: aya::programs::xdp::XdpLinkId, iface: &str) -> Result<FdLink, LinkError> {
    let link =
        prog.take_link(id).map_err(|error| LinkError::NoLink { iface: iface.to_owned(), error: Box::new(error) })?;
    FdLink::try_from(link).map_err(|_| LinkError::NotBpfLink { iface: iface.to_owned() })
}

/// The link pinned for `iface` in this layout: the program swapped into it if it
/// is on the device with the name (`Some(Adopted)`); removed if stale; if it is
/// on another device, kept in `retire` until the device with the name is
/// protected.
fn adopt_pinned_link(
    prog: &mut Xdp,
    iface: &str,
    link_pin: &Path,
    want: u32,
    retire: &mut Vec<Retire>,
) -> Result<Option<Attached>, LinkError> {
    if !link_pin.exists() {
        return Ok(None);
    }
    match examine_pinned_link(link_pin, want)? {
        PinnedLinkIs::Here => match swap_into_pinned_link(prog, link_pin)? {
            Ok(_) => return Ok(Some(Attached::Adopted)),
            Err(e) => {
                log::warn!("pinned link on {iface} is stale ({e}); attaching anew");
                std::fs::remove_file(link_pin).map_err(LinkError::io("remove the stale link pin", link_pin))?;
            }
        },
        PinnedLinkIs::Stale => {
            // The device behind the old link is gone: start afresh.
            log::warn!("pinned link on {iface} is stale (its device is gone); attaching anew");
            std::fs::remove_file(link_pin).map_err(LinkError::io("remove the stale link pin", link_pin))?;
        }
        PinnedLinkIs::Elsewhere { from, link } => {
            retire.push(Retire { link, from, remove: link_pin.to_owned(), _lock: None })
        }
    }
    Ok(None)
}

/// Links pinned for `iface` by other map layouts (an upgrade or a downgrade): one
/// on the device with the name takes the program and moves to this layout's pin
/// (`Some(Upgraded)`); stale ones are removed; one on another device goes to
/// `retire`.
fn adopt_other_layouts(
    prog: &mut Xdp,
    root: &Path,
    iface: &str,
    link_pin: &Path,
    want: u32,
    retire: &mut Vec<Retire>,
) -> Result<Option<Attached>, LinkError> {
    for (version, old_dir) in other_layouts(root, iface)? {
        // An older (or newer) blocker may still run there: never take it over.
        let old_lock = PinLock::acquire(&old_dir, iface)?;
        let old_link = old_dir.join(LINK_PIN);
        if old_link.exists() {
            match examine_pinned_link(&old_link, want)? {
                PinnedLinkIs::Here => match swap_into_pinned_link(prog, &old_link)? {
                    Ok(id) => {
                        pin_link(take_fd_link(prog, id, iface)?, link_pin)?;
                        remove_pins(&old_dir)?;
                        return Ok(Some(Attached::Upgraded { from: version }));
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
    Ok(None)
}

/// Pins a new link on the device with the name, then takes the links in `retire`
/// off their devices. The device with the name is protected first: only from
/// then on is an old attachment taken off another device.
fn pin_new_link(
    fd_link: FdLink,
    link_pin: &Path,
    retire: Vec<Retire>,
    iface: &str,
    want: u32,
    result: Attached,
) -> Result<Attached, LinkError> {
    if retire.is_empty() {
        pin_link(fd_link, link_pin)?;
        return Ok(result);
    }
    // Pinned under a new name first (bpffs names take no '.'): the new link
    // outlives this process from now on, whatever happens to the old one.
    let new_pin = link_pin.with_file_name(format!("{LINK_PIN}_new"));
    let _ = std::fs::remove_file(&new_pin);
    pin_link(fd_link, &new_pin)?;
    let mut moved_from = None;
    for r in retire {
        r.link.detach().map_err(|error| LinkError::Detach { from: r.from.clone(), error })?;
        if r.remove.is_dir() {
            remove_pins(&r.remove)?;
        } else {
            std::fs::remove_file(&r.remove).map_err(LinkError::io("remove", &r.remove))?;
        }
        log::warn!(
            "{iface}: the pinned attachment was on {}, not on the device named {iface} here (renamed or moved?); \
             {iface} (index {want}) is protected now, and the program is off {}",
            r.from,
            r.from
        );
        moved_from = Some(r.from);
    }
    std::fs::rename(&new_pin, link_pin).map_err(LinkError::io("rename the new link pin to its place", &new_pin))?;
    Ok(match moved_from {
        Some(from) => Attached::Moved { from, then: Box::new(result) },
        None => result,
    })
}

fn pin_link(link: FdLink, path: &Path) -> Result<(), LinkError> {
    link.pin(path).map(drop).map_err(|error| LinkError::PinLink { path: path.to_owned(), error })
}

/// Replaces the program of the XDP link pinned at `pin` with `prog` (one
/// BPF_LINK_UPDATE). The inner error means the link is stale (its interface is gone).
fn swap_into_pinned_link(
    prog: &mut Xdp,
    pin: &Path,
) -> Result<Result<aya::programs::xdp::XdpLinkId, ProgramError>, LinkError> {
    // Only an XDP link goes further: anything else pinned there is refused.
    LinkHandle::open(pin)?.device_and_program()?;
    let open_error = |error| LinkError::Open { path: pin.to_owned(), error };
    let pinned = PinnedLink::from_pin(pin).map_err(|e| open_error(std::io::Error::other(e)))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| open_error(std::io::Error::other(e)))?;
    Ok(prog.attach_to_link(link))
}

/// Takes the program off `iface`'s link and removes the link and pins.
pub fn detach(root: &Path, iface: &str) -> Result<(), LinkError> {
    let dir = iface_dir(root, iface);
    if !dir.exists() {
        return Err(LinkError::NothingToDetach { iface: iface.to_owned(), dir });
    }
    let _lock = PinLock::acquire(&dir, iface)?;
    super::egress::detach_pinned(&dir.join(super::pins::EGRESS_LINK_PIN))?;
    let pin = dir.join(LINK_PIN);
    if pin.exists() {
        // Off the device even while another process holds the link open.
        let link = LinkHandle::open(&pin)?;
        let (on, _) = link.device_and_program()?;
        if on != 0 {
            let from = link_place_text(LinkAt::Device(on));
            link.detach().map_err(|error| LinkError::Detach { from, error })?;
        }
    }
    Ok(remove_pins(&dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detaching_an_interface_without_pins_says_so() {
        let root = tempfile::tempdir().unwrap();
        match detach(root.path(), "eth7") {
            Err(LinkError::NothingToDetach { iface, dir }) => {
                assert_eq!(iface, "eth7");
                assert_eq!(dir, iface_dir(root.path(), "eth7"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(link_at(&iface_dir(root.path(), "eth7")).unwrap(), LinkAt::NoPin);
    }

    #[test]
    fn attach_modes_parse_by_name_only() {
        for mode in AttachMode::ALL {
            assert_eq!(mode.name().parse::<AttachMode>(), Ok(mode));
        }
        assert!("driver".parse::<AttachMode>().unwrap_err().contains("auto, native, generic"));
    }
}
