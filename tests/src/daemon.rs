//! `blocker` as a child process: the daemon inside a network namespace (entered
//! with nsenter, which changes only the network namespace, so /sys/fs/bpf stays
//! the host's), and one-shot CLI calls.

use std::{
    ffi::OsStr,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The `blocker` binary: $BLOCKER_BIN, or the one next to the test executable's
/// directory (target/<profile>/blocker).
pub fn blocker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BLOCKER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("blocker");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --bin blocker`; `cargo xtask test` does this)",
        bin.display()
    );
    bin
}

/// A bpffs directory private to one test, removed on drop.
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    pub fn new(tag: &str) -> Self {
        PinRoot(PathBuf::from(format!("/sys/fs/bpf/blocker-test-{tag}")))
    }
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `blocker ARGS` inside network namespace `ns` and waits for it to finish.
pub fn blocker_in(ns: &str, args: &[&str]) -> Result<Output> {
    Ok(Command::new("nsenter").arg(format!("--net=/run/netns/{ns}")).arg(blocker_bin()).args(args).output()?)
}

/// Runs `blocker ARGS` in the test's own namespace (for commands that need no interface).
pub fn blocker_cli(args: &[&str]) -> Result<Output> {
    Ok(Command::new(blocker_bin()).args(args).output()?)
}

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// The daemon's process id (nsenter execs it: the child is the daemon).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `blocker ARGS` in `ns` and waits until it reports ready.
    pub fn start(ns: &str, args: &[impl AsRef<OsStr>], log: &Path) -> Result<Daemon> {
        Self::start_with_env(ns, args, log, &[])
    }

    pub fn start_with_env(ns: &str, args: &[impl AsRef<OsStr>], log: &Path, env: &[(&str, &str)]) -> Result<Daemon> {
        Self::start_wrapped(ns, &[], args, log, env)
    }

    /// Starts `WRAPPER... blocker ARGS` in `ns` (a wrapper such as setpriv).
    pub fn start_wrapped(
        ns: &str,
        wrapper: &[&str],
        args: &[impl AsRef<OsStr>],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let out = File::create(log)?;
        // A daemon of a test keeps its bans' state file beside its log, never
        // in the host's /var/lib/blocker (a config file names its own).
        let mut args: Vec<std::ffi::OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if has("run") && has("--iface") && !has("--state-dir") {
            args.push("--state-dir".into());
            args.push(log.with_extension("state").into());
        }
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(wrapper)
            .arg(blocker_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning blocker")?;
        let mut d = Daemon { child: Some(child), log: log.to_owned() };
        d.wait_for_log("ready:", 1)?;
        Ok(d)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` appears `times` times in the log.
    pub fn wait_for_log(&mut self, needle: &str, times: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= times {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("blocker exited ({status}) before {needle:?}:\n{text}");
                }
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {needle:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }

    /// Sends `sig` and waits for the process to exit; returns its log.
    pub fn stop_with(mut self, sig: i32) -> Result<String> {
        self.signal(sig);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("blocker did not exit after signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.log_text())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
