//! Pin layout: `<root>/v<LAYOUT_VERSION>/<interface>/` holds every map (pinned by
//! name) and `link`, the XDP link. The link pin keeps the program attached when the
//! daemon dies; the next `blocker run` finds it and swaps its own program in with
//! one BPF_LINK_UPDATE, so the interface is never left unfiltered.
//! A process that changes an interface's pins holds an exclusive flock on its
//! directory for as long as it does.

use std::{
    ffi::CString,
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use blocker_common::LAYOUT_VERSION;

/// Why pinned state cannot be used. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot {action} {path}: {error}")]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
    #[error(
        "no bpffs on /sys/fs/bpf and mounting one failed ({error}): mount it (`mount -t bpf bpf /sys/fs/bpf`) \
         or give blocker CAP_SYS_ADMIN"
    )]
    MountFailed { error: std::io::Error },
    #[error("{root} is not on a bpffs: pins need one (mount -t bpf bpf DIR)")]
    NotBpffs { root: PathBuf },
    /// Pins that would vanish with blocker's own mount namespace.
    #[error(
        "{root}: this bpffs is mounted only in blocker's own mount namespace, not in PID 1's: its pins, and so \
         the attachment, would vanish when blocker exits, and the interface would pass everything. Run blocker \
         in the host's mount namespace (`nsenter --net=/run/netns/NAME blocker ...`, not `ip netns exec`, which \
         remounts /sys privately; no PrivateMounts= in a unit), or give --pin-root a directory on a bpffs \
         mounted in the host's namespace, or pass --detach-on-exit if nothing should outlive blocker"
    )]
    Private { root: PathBuf },
    #[error(
        "{path}: owned by uid {uid}, not by blocker's user (uid {euid}): another user may have put pins there; \
         remove it (rm -r {path}) and start blocker again"
    )]
    ForeignOwner { path: PathBuf, uid: u32, euid: u32 },
    #[error("{path}: not a directory (blocker keeps its pins there): remove it and start blocker again")]
    NotADirectory { path: PathBuf },
    #[error("another blocker process is managing {iface} (it holds the lock on {dir}); stop it first")]
    Locked { iface: String, dir: PathBuf },
}

impl PinError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PinError + 'a {
        move |error| PinError::Io { action, path: path.to_owned(), error }
    }
}

pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/blocker";

pub const LINK_PIN: &str = "link";
/// The tc egress (TCX) link, beside the XDP link, while the policy has outbound lists.
pub const EGRESS_LINK_PIN: &str = "egress_link";

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The directory of this map layout's pins: `<root>/v<LAYOUT_VERSION>`.
pub fn layout_dir(root: &Path) -> PathBuf {
    root.join(format!("v{LAYOUT_VERSION}"))
}

/// The pin directory of one interface.
pub fn iface_dir(root: &Path, iface: &str) -> PathBuf {
    layout_dir(root).join(iface)
}

fn statfs_type(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs is plain integers, for which all zeroes is a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `buf` a
    // writable statfs, the only memory the kernel touches.
    (unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0).then_some(buf.f_type as i64)
}

/// Makes sure `root` lives on a bpffs, mounting /sys/fs/bpf if nothing is mounted
/// there yet (many distributions do not mount it at boot).
pub fn ensure_bpffs(root: &Path) -> Result<(), PinError> {
    let sys_bpf = Path::new("/sys/fs/bpf");
    if root.starts_with(sys_bpf) && statfs_type(sys_bpf) != Some(BPF_FS_MAGIC) {
        let (src, dst) = (c"bpf", c"/sys/fs/bpf");
        // SAFETY: mount only reads the NUL-terminated strings, which are static;
        // a bpffs takes no data argument.
        let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(PinError::MountFailed { error: std::io::Error::last_os_error() });
        }
        log::info!("mounted bpffs on /sys/fs/bpf");
    }
    check_pin_root(root)
}

/// Refuses a pin root that is not on a bpffs (below /sys/fs/bpf, which `run`
/// mounts if it must, is accepted). `check-config` applies it too.
pub fn check_pin_root(root: &Path) -> Result<(), PinError> {
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
        return Err(PinError::NotBpffs { root: root.to_owned() });
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
pub fn check_pin_life(root: &Path, detach_on_exit: bool) -> Result<PinLife, PinError> {
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
        PinLife::Private => return Err(PinError::Private { root: root.to_owned() }),
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
pub fn secure_pin_dir(root: &Path, iface: &str) -> Result<PathBuf, PinError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let dir = iface_dir(root, iface);
    let refuse_owner = |path: &Path, uid: u32| PinError::ForeignOwner { path: path.to_owned(), uid, euid };
    for level in [root.to_path_buf(), layout_dir(root), dir.clone()] {
        match std::fs::symlink_metadata(&level) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&level)
                    .map_err(PinError::io("create", &level))?;
            }
            Err(e) => return Err(PinError::io("inspect", &level)(e)),
            Ok(meta) => {
                if !meta.file_type().is_dir() {
                    return Err(PinError::NotADirectory { path: level });
                }
                if meta.uid() != euid {
                    return Err(refuse_owner(&level, meta.uid()));
                }
                if meta.mode() & 0o077 != 0 {
                    std::fs::set_permissions(&level, std::fs::Permissions::from_mode(0o700))
                        .map_err(PinError::io("set mode 0700 on", &level))?;
                    log::warn!(
                        "{}: was mode {:o}, open to other users; set to 0700",
                        level.display(),
                        meta.mode() & 0o7777
                    );
                }
            }
        }
    }
    for entry in std::fs::read_dir(&dir).map_err(PinError::io("read", &dir))? {
        let entry = entry.map_err(PinError::io("read", &dir))?;
        let meta = entry.metadata().map_err(PinError::io("inspect", &entry.path()))?;
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
    pub fn acquire(dir: &Path, iface: &str) -> Result<Self, PinError> {
        let file = File::open(dir).map_err(PinError::io("open", dir))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(PinError::Locked { iface: iface.to_owned(), dir: dir.to_owned() });
            }
            return Err(PinError::io("lock", dir)(err));
        }
        Ok(Self { _dir: file })
    }

    /// Another handle on the same lock (a flock holds while any handle is open).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self { _dir: self._dir.try_clone()? })
    }
}

/// Whether `iface` has a pinned link under `root` (of this layout or another):
/// an attachment from an earlier run that a start would take over.
pub fn has_pinned_link(root: &Path, iface: &str) -> bool {
    iface_dir(root, iface).join(LINK_PIN).exists()
        || other_layouts(root, iface).is_ok_and(|dirs| dirs.iter().any(|(_, d)| d.join(LINK_PIN).exists()))
}

/// Deletes a pin directory. Unpinning the link drops its last reference, which
/// detaches the program (unless another pin holds the link).
pub fn remove_pins(dir: &Path) -> Result<(), PinError> {
    for entry in std::fs::read_dir(dir).map_err(PinError::io("read", dir))? {
        let path = entry.map_err(PinError::io("read", dir))?.path();
        std::fs::remove_file(&path).map_err(PinError::io("remove", &path))?;
    }
    std::fs::remove_dir(dir).map_err(PinError::io("remove", dir))?;
    Ok(())
}

/// Pin directories of `iface` under layout versions other than ours: ("vN", dir).
pub(super) fn other_layouts(root: &Path, iface: &str) -> Result<Vec<(String, PathBuf)>, PinError> {
    let ours = format!("v{LAYOUT_VERSION}");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(out) };
    for e in entries {
        let name = e.map_err(PinError::io("read", root))?.file_name().to_string_lossy().into_owned();
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
pub fn pinned_interfaces(root: &Path) -> Result<Vec<String>, PinError> {
    let dir = layout_dir(root);
    let mut out = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                out.push(e.map_err(PinError::io("read", &dir))?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PinError::io("read", &dir)(e)),
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_off_bpffs_is_refused_and_a_held_lock_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pins");
        assert!(matches!(check_pin_root(&root), Err(PinError::NotBpffs { root: r }) if r == root));
        let first = PinLock::acquire(tmp.path(), "eth0").unwrap();
        let e = PinLock::acquire(tmp.path(), "eth0").err().expect("the lock is held");
        assert!(matches!(&e, PinError::Locked { iface, .. } if iface == "eth0"), "{e}");
        assert!(e.to_string().contains("stop it first"), "{e}");
        drop(first);
        PinLock::acquire(tmp.path(), "eth0").unwrap();
    }
}
