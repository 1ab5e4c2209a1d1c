//! The shipped fail2ban action (`dist/fail2ban/action.d/blocker.conf`) with
//! Debian's fail2ban: a private instance whose jails read a log file the test
//! writes, and act through `blocker ban` on a daemon in a test namespace.
//! After maxretry failures the source is dropped in XDP; fail2ban's unban and
//! flush lift it.
#![allow(unused_crate_dependencies)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use blocker::control::protocol::BansReply;
use blocker_tests::{
    daemon::{blocker_bin, Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag, wait_until,
};

const SOURCE_V4: &str = "198.51.100.2";
const SOURCE_V6: &str = "2001:db8:a::2";

/// A private fail2ban, stopped when dropped.
struct Fail2ban {
    dir: PathBuf,
}

impl Fail2ban {
    fn start(dir: &Path, blocker: &str) -> Fail2ban {
        let conf = dir.join("fail2ban");
        let copied = Command::new("cp").args(["-r", "/etc/fail2ban"]).arg(&conf).status().unwrap();
        assert!(copied.success());
        let _ = std::fs::remove_dir_all(conf.join("jail.d"));
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/fail2ban/action.d/blocker.conf");
        std::fs::copy(shipped, conf.join("action.d/blocker.conf")).unwrap();
        let d = dir.display();
        std::fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nsocket = {d}/f2b.sock\npidfile = {d}/f2b.pid\nlogtarget = {d}/f2b.log\nloglevel = \
                 INFO\ndbfile = :memory:\n"
            ),
        )
        .unwrap();
        std::fs::write(
            conf.join("filter.d/blocker-test.conf"),
            "[Definition]\nfailregex = ^auth failure from <HOST>$\ndatepattern = {NONE}\n",
        )
        .unwrap();
        let jail = |name: &str, log: &str, bantime: i64| {
            format!(
                "[{name}]\nenabled = true\nbackend = polling\nfilter = blocker-test\nlogpath = {d}/{log}\nmaxretry = \
                 3\nfindtime = 600\nbantime = {bantime}\naction = blocker[blocker=\"{blocker}\"]\n"
            )
        };
        std::fs::write(dir.join("auth.log"), "").unwrap();
        std::fs::write(dir.join("perm.log"), "").unwrap();
        std::fs::write(
            conf.join("jail.local"),
            format!("{}{}", jail("test", "auth.log", 20), jail("forever", "perm.log", -1)),
        )
        .unwrap();
        let bin_dir = blocker_bin().parent().unwrap().display().to_string();
        let path = format!("{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin");
        let out = Command::new("fail2ban-client").arg("-c").arg(&conf).arg("start").env("PATH", path).output().unwrap();
        assert!(out.status.success(), "fail2ban start: {}", String::from_utf8_lossy(&out.stderr));
        Fail2ban { dir: dir.to_owned() }
    }

    fn client(&self, args: &[&str]) -> String {
        let out = Command::new("fail2ban-client").arg("-c").arg(self.dir.join("fail2ban")).args(args).output().unwrap();
        assert!(out.status.success(), "fail2ban-client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("f2b.log")).unwrap_or_default()
    }

    fn fail(&self, log: &str, source: &str, times: usize) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(self.dir.join(log)).unwrap();
        for _ in 0..times {
            writeln!(f, "auth failure from {source}").unwrap();
        }
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = Command::new("fail2ban-client").arg("-c").arg(self.dir.join("fail2ban")).arg("stop").output();
    }
}

#[test]
fn a_jail_bans_through_blocker_and_unbans() {
    let net = NetnsPair::new().unwrap();
    let root = PinRoot::new(&unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sock = dir.join("blocker.sock").display().to_string();
    let args = [
        "--pin-root",
        root.as_str(),
        "--socket",
        &sock,
        "run",
        "--iface",
        &net.rx_if,
        "--xdp-mode",
        "native",
        "--no-default-never-block",
    ];
    let _daemon = Daemon::start(&net.rx_ns, &args, &dir.join("daemon.log")).unwrap();
    let bans = |origin: &str| -> BansReply {
        let out = Command::new(blocker_bin())
            .args(["--socket", &sock, "bans", "--json", "--origin", origin])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let f2b = Fail2ban::start(dir, &format!("{} --socket {sock}", blocker_bin().display()));
    assert_eq!(net.ping_from(SOURCE_V4, 2).unwrap(), 2);

    // Fewer failures than maxretry: nothing happens.
    f2b.fail("auth.log", SOURCE_V4, 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(net.ping_from(SOURCE_V4, 2).unwrap(), 2, "not banned below maxretry");
    // The third: fail2ban bans, blocker drops.
    f2b.fail("auth.log", SOURCE_V4, 1);
    let banned = wait_until(Duration::from_secs(20), || net.ping_from(SOURCE_V4, 1).unwrap() == 0);
    assert!(banned, "fail2ban's ban never reached XDP:\n{}", f2b.log());
    let b = bans("fail2ban-test");
    assert_eq!(b.bans.len(), 1, "{b:?}");
    assert_eq!(b.bans[0].target, "198.51.100.2/32");
    assert_eq!(b.bans[0].reason, "fail2ban jail test");
    // The jail's bantime became the ban's expiry: it ends even if fail2ban dies.
    assert!(b.bans[0].remaining_seconds.is_some_and(|r| r > 0 && r <= 20), "{b:?}");

    // fail2ban's unban lifts it.
    f2b.client(&["set", "test", "unbanip", SOURCE_V4]);
    assert!(wait_until(Duration::from_secs(10), || net.ping_from(SOURCE_V4, 1).unwrap() == 1), "unban");
    assert!(bans("fail2ban-test").bans.is_empty());

    // bantime = -1: until unbanned; IPv6 alike.
    f2b.fail("perm.log", SOURCE_V6, 3);
    assert!(wait_until(Duration::from_secs(20), || net.ping_from(SOURCE_V6, 1).unwrap() == 0), "{}", f2b.log());
    let b = bans("fail2ban-forever");
    assert_eq!((b.bans.len(), b.bans[0].remaining_seconds), (1, None), "{b:?}");

    // A flush (unban --all) lifts every ban of the jails.
    f2b.fail("auth.log", SOURCE_V4, 3);
    assert!(wait_until(Duration::from_secs(20), || net.ping_from(SOURCE_V4, 1).unwrap() == 0), "{}", f2b.log());
    f2b.client(&["unban", "--all"]);
    assert!(wait_until(Duration::from_secs(10), || net.ping_from(SOURCE_V4, 1).unwrap() == 1
        && net.ping_from(SOURCE_V6, 1).unwrap() == 1));
    assert!(bans("fail2ban-test").bans.is_empty() && bans("fail2ban-forever").bans.is_empty());
}
