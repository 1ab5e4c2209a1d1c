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

/// Where the egress link pinned in a directory is, checked against the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressAt {
    /// No egress link pin: the policy has no outbound lists.
    NoPin,
    /// The link's device is gone.
    DeviceGone,
    /// On the egress of the device with this index here, running this program
    /// (the device's TCX egress programs include it).
    Device { ifindex: u32, program_id: u32 },
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

/// Whether program `id` runs on the TCX egress of the device with index
/// `ifindex` in this network namespace.
fn runs_on(ifindex: u32, id: u32) -> bool {
    let Some(name) = ifname(ifindex) else { return false };
    match SchedClassifier::query_tcx(&name, TcAttachType::Egress) {
        Ok((_, programs)) => programs.iter().any(|p| p.id() == id),
        Err(_) => false,
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
        i if runs_on(i, program_id) => EgressAt::Device { ifindex: i, program_id },
        i => EgressAt::Elsewhere(i),
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
        let (_, on, _) = examine(&pin)?;
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
    let iface = ifname(ifindex)
        .ok_or(LinkError::EgressAttach { iface: format!("index {ifindex}"), error: "the device is gone".into() })?;
    let attach_error =
        |error: aya::programs::ProgramError| LinkError::EgressAttach { iface: iface.clone(), error: error.to_string() };
    let id = prog
        .attach_with_options(&iface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()))
        .map_err(attach_error)?;
    let link = prog.take_link(id).map_err(attach_error)?;
    let fd_link = FdLink::try_from(link).map_err(|_| LinkError::NotBpfLink { iface: iface.clone() })?;
    fd_link.pin(&pin).map(drop).map_err(|error| LinkError::PinLink { path: pin.clone(), error })?;
    Ok(EgressSync::Attached)
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
