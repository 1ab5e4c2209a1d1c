//! The fleet's signatures against the real minisign (Debian's 0.11): keys
//! made by `blocker fleet keygen` sign with minisign, and minisign's keys and
//! `minisign -V` read what blocker signs, so an operator can check a bundle
//! with the tool they know.
#![allow(unused_crate_dependencies)]

use std::process::Command;

use blocker::fleet::sign::{PublicKey, SecretKey, SignError};
use blocker_tests::daemon::blocker_cli;

fn minisign(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new("minisign").args(args).current_dir(dir).output().expect("minisign (setup installs it)")
}

#[test]
fn blocker_and_minisign_read_each_others_keys_and_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let out = blocker_cli(&["fleet", "keygen", "--secret-key", &path("fleet.key"), "--public-key", &path("fleet.pub")])
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = PublicKey::parse(&std::fs::read_to_string(dir.join("fleet.pub")).unwrap()).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&public.id()));
    // keygen again: refused, nothing changed.
    let again =
        blocker_cli(&["fleet", "keygen", "--secret-key", &path("fleet.key"), "--public-key", &path("x.pub")]).unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // minisign signs with blocker's secret key; blocker verifies.
    std::fs::write(dir.join("bundle"), b"[policy]\ndeny_countries = [\"CN\"]\n").unwrap();
    let out = minisign(&["-S", "-s", "fleet.key", "-m", "bundle", "-t", "fleet edge revision 3"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sig = std::fs::read_to_string(dir.join("bundle.minisig")).unwrap();
    let bundle = std::fs::read(dir.join("bundle")).unwrap();
    assert_eq!(public.verify(&bundle, &sig).unwrap(), "fleet edge revision 3");
    assert_eq!(public.verify(b"[policy]\n", &sig), Err(SignError::BadSignature));

    // blocker signs; minisign -V checks it, and refuses a changed file.
    let secret = SecretKey::parse(&std::fs::read_to_string(dir.join("fleet.key")).unwrap()).unwrap();
    std::fs::write(dir.join("bundle.minisig"), secret.sign(&bundle, "fleet edge revision 4")).unwrap();
    let out = minisign(&["-V", "-p", "fleet.pub", "-m", "bundle"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fleet edge revision 4"));
    std::fs::write(dir.join("bundle"), b"[policy]\n").unwrap();
    assert!(!minisign(&["-V", "-p", "fleet.pub", "-m", "bundle"], dir).status.success());

    // A key pair made by minisign (unencrypted) serves blocker.
    let out = minisign(&["-G", "-W", "-p", "m.pub", "-s", "m.key"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m_secret = SecretKey::parse(&std::fs::read_to_string(dir.join("m.key")).unwrap()).unwrap();
    let m_public = PublicKey::parse(&std::fs::read_to_string(dir.join("m.pub")).unwrap()).unwrap();
    assert_eq!(m_secret.public(), m_public);
    std::fs::write(dir.join("bundle.minisig"), m_secret.sign(b"[policy]\n", "by minisign's key")).unwrap();
    assert!(minisign(&["-V", "-p", "m.pub", "-m", "bundle"], dir).status.success());
    // The fleet's key does not accept a signature of another key.
    assert!(matches!(
        public.verify(b"[policy]\n", &std::fs::read_to_string(dir.join("bundle.minisig")).unwrap()),
        Err(SignError::OtherKey { .. })
    ));
}
