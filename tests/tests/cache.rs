//! The URL cache on a full disk: needs root to mount a small tmpfs, so it runs
//! in the root suite.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use blocker::source::{
    cidr_list::read_list,
    fetch::{fetch, CheckError},
};
use blocker_tests::{
    file_kinds as files,
    http::{serve, Script},
};

fn list_check(path: &Path) -> Result<usize, CheckError> {
    Ok(read_list(path)?.len())
}

/// A full disk: the download cannot be written, no partial file stays, and
/// the last good copy is used.
#[test]
fn full_disk_keeps_the_old_copy_and_leaves_no_partial_file() {
    let script = Arc::new(Mutex::new(Script::default()));
    let base = serve(script.clone());
    let url = format!("{base}/list.txt");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs needs root (run the tests as root)");
    // Unmounted before the directory is removed, even when an assertion fails.
    let _mount = Unmount(dir.clone());
    script.lock().unwrap().responses.push((200, vec![], b"192.0.2.0/24\n".to_vec()));
    assert!(fetch(&url, &dir, &list_check).unwrap().changed);
    let big: Vec<u8> =
        (0..20_000).flat_map(|i| format!("10.{}.{}.0/24\n", i / 256 % 256, i % 256).into_bytes()).collect();
    script.lock().unwrap().responses.push((200, vec![], big));
    let f = fetch(&url, &dir, &list_check).unwrap();
    assert!(f.stale && !f.changed, "{f:?}");
    assert_eq!(files(&dir), ["data", "meta"]);
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
