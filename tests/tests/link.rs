//! The XDP link's edges, called as a library: attaching, refusals by variant, and
//! what is pinned where the link should be. Each test runs in a thread of its own
//! that has unshared its network namespace, so its `lo` is a device only it sees.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use blocker::dataplane::{
    device::DeviceError,
    link::{self, AttachMode, Attached, LinkAt, LinkError},
    maps::DataplaneMaps,
    pins,
};
use blocker_common::map_names;
use blocker_tests::{daemon::PinRoot, unique_tag};

/// Runs `body` in a new thread inside a network namespace of its own, with a
/// pin root on the host's bpffs that is removed afterwards.
fn in_own_netns(body: impl FnOnce(&PinRoot) + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET) needs root: {}", std::io::Error::last_os_error());
        let root = PinRoot::new(&format!("link-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        body(&root);
    })
    .join()
    .expect("the test body passed");
}

fn loaded(root: &PinRoot, iface: &str) -> DataplaneMaps {
    DataplaneMaps::load(&pins::iface_dir(&root.0, iface), 0).expect("load the XDP program")
}

#[test]
fn attach_check_and_detach_on_a_device_of_this_namespace() {
    in_own_netns(|root| {
        let mut maps = loaded(root, "lo");
        let how = link::attach(maps.ebpf_mut().unwrap(), &root.0, "lo", AttachMode::Generic).unwrap();
        assert_eq!(how, Attached::Generic);
        let dir = pins::iface_dir(&root.0, "lo");
        assert_eq!(link::link_at(&dir).unwrap(), LinkAt::Device(1));
        assert!(link::attached_here(&dir, "lo"));
        // A second attach adopts the pinned link rather than adding one.
        let mut again = loaded(root, "lo");
        let how = link::attach(again.ebpf_mut().unwrap(), &root.0, "lo", AttachMode::Generic).unwrap();
        assert_eq!(how, Attached::Adopted);
        link::detach(&root.0, "lo").unwrap();
        assert_eq!(link::link_at(&dir).unwrap(), LinkAt::NoPin);
        assert_eq!(blocker::dataplane::device::xdp_program_on(1).unwrap(), 0, "lo runs no XDP program");
    });
}

#[test]
fn a_refused_mode_names_the_interface_and_mode_and_pins_no_link() {
    in_own_netns(|root| {
        let mut maps = loaded(root, "lo");
        // lo has no driver XDP.
        let err = link::attach(maps.ebpf_mut().unwrap(), &root.0, "lo", AttachMode::Native).unwrap_err();
        assert!(
            matches!(&err, LinkError::AttachRefused { iface, mode: AttachMode::Native, earlier: None, .. } if iface == "lo"),
            "{err}"
        );
        assert!(err.to_string().contains("xdp_mode native"), "{err}");
        assert_eq!(link::link_at(&pins::iface_dir(&root.0, "lo")).unwrap(), LinkAt::NoPin);
    });
}

#[test]
fn an_absent_interface_is_refused_before_anything_is_attached() {
    in_own_netns(|root| {
        let mut maps = loaded(root, "blk-none0");
        let err = link::attach(maps.ebpf_mut().unwrap(), &root.0, "blk-none0", AttachMode::Auto).unwrap_err();
        assert!(
            matches!(&err, LinkError::Device(DeviceError::NoSuchInterface { name }) if name == "blk-none0"),
            "{err}"
        );
    });
}

/// A per-CPU array's type number is the XDP link's: read as a link, its info
/// would pass for one. Whatever is pinned at the link's place that is not a
/// bpf link is refused, by every path that opens the link.
#[test]
fn a_map_pinned_where_the_link_belongs_is_refused_not_read_as_a_link() {
    in_own_netns(|root| {
        let mut maps = loaded(root, "lo");
        let dir = pins::iface_dir(&root.0, "lo");
        let stats = aya::maps::MapData::from_pin(dir.join(map_names::GLOBAL_STATS)).unwrap();
        stats.pin(dir.join(pins::LINK_PIN)).unwrap();
        let not_a_link = |e: &LinkError| matches!(e, LinkError::NotALink { what, .. } if what == "bpf map");
        let err = link::link_at(&dir).unwrap_err();
        assert!(not_a_link(&err), "{err}");
        assert!(err.to_string().contains("rm "), "says what to do: {err}");
        let err = link::attach(maps.ebpf_mut().unwrap(), &root.0, "lo", AttachMode::Generic).unwrap_err();
        assert!(not_a_link(&err), "{err}");
        let err = link::swap_program(maps.ebpf_mut().unwrap(), &dir).unwrap_err();
        assert!(not_a_link(&err), "{err}");
        assert!(!link::attached_here(&dir, "lo"));
        assert_eq!(blocker::dataplane::device::xdp_program_on(1).unwrap(), 0, "nothing was attached");
    });
}
