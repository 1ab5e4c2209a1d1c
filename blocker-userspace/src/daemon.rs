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
    /// Control socket (None: no socket).
    pub socket: Option<PathBuf>,
}

/// What `blocker status` reports besides the live maps.
struct State {
    started: std::time::SystemTime,
    attached: Vec<(String, String, u32)>,
    table: CompiledTable,
    last_reload: Option<(std::time::SystemTime, Result<String, String>)>,
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl State {
    fn status(&self, opts: &RunOptions, managed: &[Managed]) -> serde_json::Value {
        let lists: Vec<serde_json::Value> = self
            .table
            .lists
            .iter()
            .enumerate()
            .map(|(i, l)| {
                serde_json::json!({
                    "name": l.name,
                    "action": l.action.name(),
                    "ipv4_prefixes": self.table.v4.iter().filter(|(_, x)| *x == i).count(),
                    "ipv6_prefixes": self.table.v6.iter().filter(|(_, x)| *x == i).count(),
                })
            })
            .collect();
        let interfaces: Vec<serde_json::Value> = self
            .attached
            .iter()
            .zip(&opts.interfaces)
            .zip(managed)
            .map(|(((name, how, prog_id), spec), m)| {
                serde_json::json!({
                    "name": name,
                    "attached": how,
                    "program_id": prog_id,
                    "mode": if spec.monitor { "monitor" } else { "enforce" },
                    "generation": m.maps.active_generation().ok(),
                })
            })
            .collect();
        let sources: Vec<serde_json::Value> = opts
            .policy
            .deny
            .iter()
            .chain(&opts.policy.allow)
            .chain(&opts.policy.monitor_list)
            .map(|s| s.path.display().to_string())
            .chain(opts.policy.country_source.iter().map(|s| s.location.clone()))
            .map(|loc| serde_json::json!({ "source": loc, "age_seconds": source_age(&opts.policy.cache_dir, &loc) }))
            .collect();
        serde_json::json!({
            "ok": true,
            "started": unix_secs(self.started),
            "config": opts.config.as_ref().map(|p| p.display().to_string()),
            "interfaces": interfaces,
            "lists": lists,
            "sources": sources,
            "last_reload": self.last_reload.as_ref().map(|(t, r)| match r {
                Ok(summary) => serde_json::json!({ "at": unix_secs(*t), "ok": true, "summary": summary }),
                Err(e) => serde_json::json!({ "at": unix_secs(*t), "ok": false, "error": e }),
            }),
        })
    }
}

/// Seconds since a source last changed: the file's mtime, or a URL's last good fetch.
fn source_age(cache_dir: &std::path::Path, location: &str) -> Option<u64> {
    let path = if location.starts_with("http://") || location.starts_with("https://") {
        crate::fetch::cached_copy(location, cache_dir)
    } else {
        let plain = location.rsplit_once(':').map(|(_, p)| p).filter(|p| p.starts_with('/')).unwrap_or(location);
        std::path::PathBuf::from(plain)
    };
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    modified.elapsed().ok().map(|d| d.as_secs())
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

fn start_interface(opts: &RunOptions, spec: &InterfaceOptions, table: &CompiledTable) -> Result<(Managed, String, u32)> {
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
    let prog_id = loader::program_mut(&mut ebpf)?.info().map(|i| i.id()).unwrap_or(0);
    Ok((Managed { iface: iface.into(), maps, _lock: lock, _ebpf: ebpf }, how.to_string(), prog_id))
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
fn reload(opts: &mut RunOptions, managed: &mut [Managed], state: &mut State) -> Result<String> {
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
    let summary = table_summary(&table);
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
    state.table = table;
    Ok(summary)
}

async fn accept(listener: &Option<tokio::net::UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Answers one control request (see `control`). Requests are handled one at a
/// time on the daemon's task, so a reload never races another change.
async fn serve(stream: tokio::net::UnixStream, opts: &mut RunOptions, managed: &mut [Managed], state: &mut State) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read);
    let read_line = reader.read_line(&mut line);
    if tokio::time::timeout(std::time::Duration::from_secs(5), read_line).await.is_err() {
        return;
    }
    let command = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["command"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let answer = match command.as_str() {
        "status" => state.status(opts, managed),
        "reload" => {
            let result = reload(opts, managed, state).map_err(|e| format!("{e:#}"));
            if let Err(e) = &result {
                log::error!("{e}");
            }
            state.last_reload = Some((std::time::SystemTime::now(), result.clone()));
            match result {
                Ok(summary) => serde_json::json!({ "ok": true, "summary": summary }),
                Err(e) => serde_json::json!({ "ok": false, "error": e }),
            }
        }
        "stats" => {
            let mut out = Vec::new();
            for m in managed.iter() {
                match m.maps.counters() {
                    Ok(c) => out.push(crate::stats::to_json(&m.iface, &c)),
                    Err(e) => out.push(serde_json::json!({ "interface": m.iface, "error": format!("{e:#}") })),
                }
            }
            serde_json::json!({ "ok": true, "interfaces": out })
        }
        other => serde_json::json!({ "ok": false, "error": format!("unknown command {other:?} (status, reload, stats)") }),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
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
    if !opts.policy.has_rules() {
        log::warn!("no lists given: every packet passes (see --deny, --deny-country, --allow-country)");
    }
    for (p, why) in opts.policy.never_block_ranges()? {
        log::info!("never blocked: {p} ({why})");
    }
    loader::ensure_bpffs(&opts.pin_root)?;
    for iface in &opts.interfaces {
        loader::ifindex(&iface.name)?;
    }
    let listener = match &opts.socket {
        Some(path) => Some(crate::control::bind(path)?),
        None => None,
    };
    let mut managed = Vec::new();
    let mut attached = Vec::new();
    for iface in &opts.interfaces {
        let (m, how, prog_id) = start_interface(&opts, iface, &table)?;
        attached.push((iface.name.clone(), how, prog_id));
        managed.push(m);
    }
    let mut state = State { started: std::time::SystemTime::now(), attached, table, last_reload: None };
    log::info!(
        "ready: SIGHUP{} reloads the lists, SIGINT/SIGTERM stops (the program stays attached)",
        opts.socket.as_ref().map(|p| format!(" or `blocker reload` (socket {})", p.display())).unwrap_or_default()
    );

    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let result = reload(&mut opts, &mut managed, &mut state).map_err(|e| format!("{e:#}"));
                if let Err(e) = &result {
                    log::error!("{e}");
                }
                state.last_reload = Some((std::time::SystemTime::now(), result));
            }
            conn = accept(&listener) => {
                if let Ok(stream) = conn {
                    serve(stream, &mut opts, &mut managed, &mut state).await;
                }
            }
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    if let Some(path) = &opts.socket {
        let _ = std::fs::remove_file(path);
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
