//! The tc egress (TCX) link of an interface: the outbound direction. It runs
//! the egress program of the same program instance as the XDP link, so both
//! directions read the same classifier maps and counters. It exists only while
//! the policy has outbound lists: `sync` attaches it, swaps its program (one
//! BPF_LINK_UPDATE, atomic for every packet) or takes it off, after each swap of
//! the XDP link. Pinned beside the XDP link, it outlives the daemon the same way.

use std::path::Path;

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf,
};
use aya_obj::generated::{bpf_attach_type, bpf_link_type};

use super::{
    device::ifname,
    link::{LinkError, LinkHandle},
    object::egress_program_mut,
    pins::EGRESS_LINK_PIN,
};

/// A BPF program the kernel names: another's, seen beside ours.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgramBrief {
    pub id: u32,
    pub name: String,
}

impl std::fmt::Display for ProgramBrief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name.as_str() {
            "" => write!(f, "id {}", self.id),
            name => write!(f, "id {} ({name})", self.id),
        }
    }
}

/// Where the egress link pinned in a directory is, checked against the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressAt {
    /// No egress link pin: the policy has no outbound lists.
    NoPin,
    /// The link's device is gone.
    DeviceGone,
    /// On the egress of the device with this index here, running this program
    /// (the device's TCX egress programs include it), behind the programs
    /// `ahead` (in the order they run): a program before ours that passes a
    /// packet (TC_ACT_OK) ends the chain, and ours never sees it.
    Device { ifindex: u32, program_id: u32, ahead: Vec<ProgramBrief> },
    /// On a device with this index that does not run it here (another
    /// namespace).
    Elsewhere(u32),
}

/// The TCX egress link pinned at `pin`: its device and program, or an error if
/// something else is pinned there.
fn examine(pin: &Path) -> Result<(LinkHandle, u32, u32), LinkError> {
    let link = LinkHandle::open(pin)?;
    let info = link.info()?;
    // SAFETY: plain integers whatever the link type; they mean the TCX link's
    // device and attach type only for a TCX link, and are used only then.
    let tcx = unsafe { info.__bindgen_anon_1.tcx };
    let tcx = (info.type_ == bpf_link_type::BPF_LINK_TYPE_TCX as u32).then_some(tcx);
    match tcx {
        Some(t) if t.attach_type == bpf_attach_type::BPF_TCX_EGRESS as u32 || t.ifindex == 0 => {
            Ok((link, t.ifindex, info.prog_id))
        }
        _ => Err(LinkError::NotEgress { path: pin.to_owned(), kind: info.type_ }),
    }
}

/// The programs that run before program `id` on the TCX egress of the device
/// with index `ifindex` in this network namespace (None: `id` is not there).
fn ahead_of(ifindex: u32, id: u32) -> Option<Vec<ProgramBrief>> {
    let name = ifname(ifindex)?;
    let (_, programs) = SchedClassifier::query_tcx(&name, TcAttachType::Egress).ok()?;
    let at = programs.iter().position(|p| p.id() == id)?;
    Some(
        programs[..at]
            .iter()
            .map(|p| ProgramBrief { id: p.id(), name: p.name_as_str().unwrap_or_default().to_owned() })
            .collect(),
    )
}

/// The programs that run before blocker's on the egress of `iface`, if its
/// egress link pinned in `dir` is there (empty: it runs first, or there is none).
pub fn egress_ahead(dir: &Path, iface: &str) -> Vec<ProgramBrief> {
    match egress_at(dir) {
        Ok(EgressAt::Device { ifindex, ahead, .. })
            if super::device::find_interface(iface).ok().flatten() == Some(ifindex) =>
        {
            ahead
        }
        _ => Vec::new(),
    }
}

/// Whether the egress link pinned in `dir` is on the egress of the device
/// named `iface` here (None: no egress link is pinned): the checked fact behind
/// "outbound attached" in status and stats.
pub fn egress_here(dir: &Path, iface: &str) -> Option<bool> {
    match egress_at(dir) {
        Ok(EgressAt::NoPin) => None,
        Ok(EgressAt::Device { ifindex, .. }) => {
            Some(super::device::find_interface(iface).ok().flatten() == Some(ifindex))
        }
        Ok(_) | Err(_) => Some(false),
    }
}

pub fn egress_at(dir: &Path) -> Result<EgressAt, LinkError> {
    let pin = dir.join(EGRESS_LINK_PIN);
    if !pin.exists() {
        return Ok(EgressAt::NoPin);
    }
    let (_, on, program_id) = examine(&pin)?;
    Ok(match on {
        0 => EgressAt::DeviceGone,
        i => match ahead_of(i, program_id) {
            Some(ahead) => EgressAt::Device { ifindex: i, program_id, ahead },
            None => EgressAt::Elsewhere(i),
        },
    })
}

/// How the egress link ended up after a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressSync {
    /// The policy has no outbound lists, and there is no egress link.
    None,
    Attached,
    /// The pinned link now runs the new program (one BPF_LINK_UPDATE).
    Swapped,
    /// The policy lost its outbound lists: the link is off the device.
    Detached,
}

/// Makes the egress link of the device with index `ifindex` match the program
/// instance `ebpf`: its egress program swapped onto the pinned link, attached
/// anew (and pinned), or, for an instance without one, the link taken off.
pub fn sync(ebpf: &mut Ebpf, dir: &Path, ifindex: u32) -> Result<EgressSync, LinkError> {
    let pin = dir.join(EGRESS_LINK_PIN);
    let Some(prog) = egress_program_mut(ebpf) else {
        if !pin.exists() {
            return Ok(EgressSync::None);
        }
        detach_pinned(&pin)?;
        return Ok(EgressSync::Detached);
    };
    if pin.exists() {
        let (_, on, linked) = examine(&pin)?;
        let ahead = ahead_of(on, linked).unwrap_or_default();
        if on == ifindex && !ahead.is_empty() {
            // Another program went ahead of ours since it was attached: attach
            // anew, first, then take the old link off (for that moment a packet
            // may be judged twice, never not at all).
            let names: Vec<String> = ahead.iter().map(ToString::to_string).collect();
            log::warn!(
                "{}: {} program(s) run before blocker's on the tc egress ({}); attaching it first again",
                ifname(ifindex).unwrap_or_default(),
                names.len(),
                names.join(", ")
            );
            return attach_first(prog, &pin, ifindex, true).map(|()| EgressSync::Attached);
        }
        if on == ifindex {
            let open_error = |e: aya::programs::links::LinkError| LinkError::Open {
                path: pin.clone(),
                error: std::io::Error::other(e),
            };
            let pinned = PinnedLink::from_pin(&pin).map_err(open_error)?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(open_error)?;
            match prog.attach_to_link(link) {
                Ok(_) => return Ok(EgressSync::Swapped),
                Err(e) => log::warn!("pinned egress link {} is stale ({e}); attaching anew", pin.display()),
            }
        } else {
            log::warn!("pinned egress link {} is on another device (index {on}); attaching anew", pin.display());
        }
        detach_pinned(&pin)?;
    }
    attach_first(prog, &pin, ifindex, false)?;
    Ok(EgressSync::Attached)
}

/// Attaches `prog` to the TCX egress of device `ifindex` before every program
/// there (BPF_F_BEFORE with no anchor), so that its verdict comes before
/// anyone's pass, and pins the link at `pin`. `replace`: a link of ours is
/// pinned there already; it is taken off once the new one is pinned.
fn attach_first(prog: &mut SchedClassifier, pin: &Path, ifindex: u32, replace: bool) -> Result<(), LinkError> {
    let iface = ifname(ifindex)
        .ok_or(LinkError::EgressAttach { iface: format!("index {ifindex}"), error: "the device is gone".into() })?;
    let attach_error =
        |error: aya::programs::ProgramError| LinkError::EgressAttach { iface: iface.clone(), error: error.to_string() };
    let id = prog
        .attach_with_options(&iface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::first()))
        .map_err(attach_error)?;
    let link = prog.take_link(id).map_err(attach_error)?;
    let fd_link = FdLink::try_from(link).map_err(|_| LinkError::NotBpfLink { iface: iface.clone() })?;
    if !replace {
        return fd_link.pin(pin).map(drop).map_err(|error| LinkError::PinLink { path: pin.to_owned(), error });
    }
    // The new pin takes the old one's place in one rename; then the old link
    // goes off the device.
    let old = examine(pin).ok();
    // bpffs takes no dot in a name.
    let fresh = pin.with_file_name(format!("{}_new", EGRESS_LINK_PIN));
    let _ = std::fs::remove_file(&fresh);
    fd_link.pin(&fresh).map(drop).map_err(|error| LinkError::PinLink { path: fresh.clone(), error })?;
    std::fs::rename(&fresh, pin).map_err(|error| LinkError::Io { action: "rename", path: fresh.clone(), error })?;
    if let Some((link, on, _)) = old.filter(|(_, on, _)| *on != 0) {
        link.detach().map_err(|error| LinkError::Detach { from: format!("egress of index {on}"), error })?;
    }
    Ok(())
}

/// Takes the link pinned at `pin` off its device (whoever else holds it) and
/// removes the pin.
pub(super) fn detach_pinned(pin: &Path) -> Result<(), LinkError> {
    if !pin.exists() {
        return Ok(());
    }
    if let Ok((link, on, _)) = examine(pin) {
        if on != 0 {
            link.detach().map_err(|error| LinkError::Detach { from: format!("egress of index {on}"), error })?;
        }
    }
    std::fs::remove_file(pin).map_err(|error| LinkError::Io { action: "remove", path: pin.to_owned(), error })
}
