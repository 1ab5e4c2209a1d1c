//! `blocker run`: attach to interfaces, keep the tables current, stop on signal.

use std::{collections::HashSet, path::PathBuf, time::Instant};

use anyhow::{bail, Context as _, Result};
use aya::Ebpf;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    compile::CompiledTable,
    loader::{self, AttachMode, PinLock},
    maps::DataplaneMaps,
    policy::Policy,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceOptions {
    pub name: String,
    pub attach_mode: AttachMode,
    /// Dry run on this interface: nothing dropped, would-be drops counted.
    pub monitor: bool,
}

/// Everything a daemon run needs: from the command line or a config file.
#[derive(Debug)]
pub struct RunOptions {
    pub interfaces: Vec<InterfaceOptions>,
    pub policy: Policy,
    pub detach_on_exit: bool,
    pub pin_root: PathBuf,
    /// aya-log level compiled into the program: 0 = off (no cost), 5 = trace.
    pub ebpf_log_level: u8,
    /// The config file this came from: a reload reads it again.
    pub config: Option<PathBuf>,
}

/// One interface under this daemon's control.
struct Managed {
    iface: String,
    maps: DataplaneMaps,
    // Held for the daemon's lifetime: the lock keeps other blocker processes away,
    // the Ebpf keeps the program and log ring buffer open.
    _lock: PinLock,
    _ebpf: Ebpf,
}

fn table_summary(table: &CompiledTable) -> String {
    format!(
        "{} IPv4 + {} IPv6 prefixes from {} lists",
        table.v4.len(),
        table.v6.len(),
        table.lists.len()
    )
}

fn mode_text(monitor: bool) -> &'static str {
    if monitor {
        "monitor (dry run, nothing dropped)"
    } else {
        "enforce"
    }
}

fn start_interface(opts: &RunOptions, spec: &InterfaceOptions, table: &CompiledTable) -> Result<Managed> {
    let iface = spec.name.as_str();
    let dir = loader::iface_dir(&opts.pin_root, iface);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = PinLock::acquire(&dir, iface)?;
    let mut ebpf = loader::load(&dir, opts.ebpf_log_level)?;
    spawn_ebpf_logger(&mut ebpf, iface);
    let mut maps = DataplaneMaps::open(&dir)?;
    // Tables first, then the program on the link: it filters from its first packet.
    maps.apply(table)?;
    maps.set_monitor_mode(spec.monitor)?;
    let how = loader::attach(&mut ebpf, &opts.pin_root, iface, spec.attach_mode)?;
    log::info!("{iface}: {how}; {}; mode {}", table_summary(table), mode_text(spec.monitor));
    Ok(Managed { iface: iface.into(), maps, _lock: lock, _ebpf: ebpf })
}

fn spawn_ebpf_logger(ebpf: &mut Ebpf, iface: &str) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("{iface}: eBPF logs unavailable: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer fd for as long as it lives, and the
    // AsyncFd owns the logger.
    let registered = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("{iface}: eBPF logs unavailable: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// Re-reads the policy (and the config file, if any) and applies it everywhere.
fn reload(opts: &mut RunOptions, managed: &mut [Managed]) -> Result<()> {
    let started = Instant::now();
    const ABORTED: &str = "reload aborted, the running tables are unchanged";
    if let Some(path) = opts.config.clone() {
        let fresh = crate::config::load(&path).context(ABORTED)?;
        let names = |o: &[InterfaceOptions]| o.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        if names(&fresh.interfaces) != names(&opts.interfaces) || fresh.pin_root != opts.pin_root {
            bail!("{ABORTED}: the interfaces or the pin root changed in {}; restart blocker to apply that", path.display());
        }
        opts.policy = fresh.policy;
        opts.interfaces = fresh.interfaces;
    }
    let table = opts.policy.build_table().context(ABORTED)?;
    for (m, spec) in managed.iter_mut().zip(&opts.interfaces) {
        let report = m.maps.apply(&table).with_context(|| format!("{}: {ABORTED}", m.iface))?;
        m.maps.set_monitor_mode(spec.monitor)?;
        log::info!(
            "{}: reloaded {} (generation {}, classifier chunks {}/{} IPv4, {}/{} IPv6) in {} ms",
            m.iface,
            table_summary(&table),
            report.generation,
            report.v4_chunks,
            report.v4_capacity,
            report.v6_chunks,
            report.v6_capacity,
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

pub async fn run(mut opts: RunOptions) -> Result<()> {
    if opts.interfaces.is_empty() {
        bail!("no interface given: pass --iface IF");
    }
    let mut seen = HashSet::new();
    if let Some(dup) = opts.interfaces.iter().find(|i| !seen.insert(i.name.clone())) {
        bail!("interface {} is given twice", dup.name);
    }
    loader::check_privileges()?;
    // Bad lists fail here, before the kernel is touched.
    let table = opts.policy.build_table()?;
    if table.lists.iter().all(|l| l.name == crate::policy::NEVER_BLOCK) {
        log::warn!("no lists given: every packet passes (see --deny, --deny-country, --allow-country)");
    }
    for (p, why) in opts.policy.never_block_ranges()? {
        log::info!("never blocked: {p} ({why})");
    }
    loader::ensure_bpffs(&opts.pin_root)?;
    for iface in &opts.interfaces {
        loader::ifindex(&iface.name)?;
    }
    let mut managed = Vec::new();
    for iface in &opts.interfaces {
        managed.push(start_interface(&opts, iface, &table)?);
    }
    log::info!("ready: SIGHUP reloads the lists, SIGINT/SIGTERM stops (the program stays attached)");

    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = reload(&mut opts, &mut managed) {
                    log::error!("{e:#}");
                }
            }
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    if opts.detach_on_exit {
        let ifaces: Vec<String> = managed.iter().map(|m| m.iface.clone()).collect();
        // Release the locks first: detach takes them itself.
        drop(managed);
        for iface in ifaces {
            loader::detach(&opts.pin_root, &iface)?;
            log::info!("{iface}: stopping; detached (--detach-on-exit): traffic is no longer filtered");
        }
        return Ok(());
    }
    for m in &managed {
        log::info!(
            "{}: stopping; the program stays attached and blocking. `blocker detach --iface {}` removes it",
            m.iface,
            m.iface
        );
    }
    Ok(())
}
