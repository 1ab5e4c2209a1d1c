//! The URL cache on a full disk: needs root to mount a small tmpfs, so it runs
//! in the root suite.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use blocker::source::{cidr_list::read_list, fetch::fetch};
use blocker_tests::{
    file_kinds as files,
    http::{serve, Script},
};

fn list_check(path: &Path) -> anyhow::Result<usize> {
    Ok(read_list(path)?.len())
}

/// A full disk: the download cannot be written, no partial file stays, and
/// the last good copy is used.
#[test]
fn full_disk_keeps_the_old_copy_and_leaves_no_partial_file() {
    let script = Arc::new(Mutex::new(Script::default()));
    let base = serve(script.clone());
    let url = format!("{base}/list.txt");
    let dir = std::env::temp_dir().join(format!("blocker-cache-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs needs root (run the tests as root)");
    script.lock().unwrap().responses.push((200, vec![], b"192.0.2.0/24\n".to_vec()));
    assert!(fetch(&url, &dir, &list_check).unwrap().changed);
    let big: Vec<u8> =
        (0..20_000).flat_map(|i| format!("10.{}.{}.0/24\n", i / 256 % 256, i % 256).into_bytes()).collect();
    script.lock().unwrap().responses.push((200, vec![], big));
    let f = fetch(&url, &dir, &list_check).unwrap();
    let leftover = files(&dir);
    let _ = std::process::Command::new("umount").arg(&dir).status();
    assert!(f.stale && !f.changed, "{f:?}");
    assert_eq!(leftover, ["data", "meta"]);
    let _ = std::fs::remove_dir_all(&dir);
}
