//! The XDP link of an interface: attaching (or adopting a pinned link), swapping
//! the program on it, checking where it is, and detaching.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf,
};

use super::{
    device::{find_interface, ifindex, ifname, xdp_program_on},
    object::program_mut,
    pins::{iface_dir, other_layouts, remove_pins, PinLock, LINK_PIN},
};

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
                let fd_link = FdLink::try_from(prog.take_link(id)?).context("XDP attachment is not a bpf_link")?;
                return pin_new_link(fd_link, &link_pin, retire, iface, want, result.clone());
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
) -> Result<Option<Attached>> {
    if !link_pin.exists() {
        return Ok(None);
    }
    match examine_pinned_link(link_pin, want)? {
        PinnedLinkIs::Here => match swap_into_pinned_link(prog, link_pin)? {
            Ok(_) => return Ok(Some(Attached::Adopted)),
            Err(e) => {
                log::warn!("pinned link on {iface} is stale ({e}); attaching anew");
                std::fs::remove_file(link_pin)?;
            }
        },
        PinnedLinkIs::Stale => {
            // The device behind the old link is gone: start afresh.
            log::warn!("pinned link on {iface} is stale (its device is gone); attaching anew");
            std::fs::remove_file(link_pin)?;
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
) -> Result<Option<Attached>> {
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
                        fd_link.pin(link_pin).with_context(|| format!("cannot pin link at {}", link_pin.display()))?;
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
) -> Result<Attached> {
    if retire.is_empty() {
        fd_link.pin(link_pin).with_context(|| format!("cannot pin link at {}", link_pin.display()))?;
        return Ok(result);
    }
    // Pinned under a new name first (bpffs names take no '.'): the new link
    // outlives this process from now on, whatever happens to the old one.
    let new_pin = link_pin.with_file_name(format!("{LINK_PIN}_new"));
    let _ = std::fs::remove_file(&new_pin);
    fd_link.pin(&new_pin).with_context(|| format!("cannot pin link at {}", new_pin.display()))?;
    let mut moved_from = None;
    for r in retire {
        r.link.detach().with_context(|| format!("cannot detach the pinned link from {}", r.from))?;
        if r.remove.is_dir() {
            remove_pins(&r.remove)?;
        } else {
            std::fs::remove_file(&r.remove).with_context(|| format!("cannot remove {}", r.remove.display()))?;
        }
        log::warn!(
            "{iface}: the pinned attachment was on {}, not on the device named {iface} here (renamed or moved?); \
             {iface} (index {want}) is protected now, and the program is off {}",
            r.from,
            r.from
        );
        moved_from = Some(r.from);
    }
    std::fs::rename(&new_pin, link_pin)
        .with_context(|| format!("cannot rename {} to {}", new_pin.display(), link_pin.display()))?;
    Ok(match moved_from {
        Some(from) => Attached::Moved { from, then: Box::new(result) },
        None => result,
    })
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
    Ok(remove_pins(&dir)?)
}
