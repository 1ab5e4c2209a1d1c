//! The daemon's side of a fleet: the bundle in force, what the follower
//! reports (syncs, offers), and the fleet's part of `status` and the metrics.
//! The follower and the reporter (`fleet::host`) run on threads of their own:
//! etcd is never waited for on the daemon's task.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use anyhow::{Context as _, Result};

use crate::{
    clock::unix_secs,
    config::RunOptions,
    control::protocol::FleetStatus,
    fleet::{
        host::{self, FleetOptions, Follower, Host, Reporter, Start, StartedFrom, Unpacked},
        store::HostState,
    },
};

/// What the follower's thread tells the daemon's task.
pub(super) enum FleetMessage {
    /// The group's pointer was read from etcd (Ok), or could not be (why).
    Synced(Result<(), String>),
    /// A bundle refused before it was offered: why (None: nothing stands refused).
    Refused(Option<String>),
    /// A verified, unpacked bundle to put in force; the answer goes back.
    Offer(Box<Unpacked>, tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// The follower's handle on the daemon: blocking sends on its thread.
struct DaemonHost {
    tx: tokio::sync::mpsc::Sender<FleetMessage>,
}

impl Host for DaemonHost {
    fn synced(&mut self, result: Result<(), String>) {
        let _ = self.tx.blocking_send(FleetMessage::Synced(result));
    }

    fn refused(&mut self, reason: Option<&str>) {
        let _ = self.tx.blocking_send(FleetMessage::Refused(reason.map(str::to_owned)));
    }

    fn offer(&mut self, bundle: Unpacked) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .blocking_send(FleetMessage::Offer(Box::new(bundle), reply))
            .map_err(|_| "the daemon is stopping".to_owned())?;
        answer.blocking_recv().unwrap_or_else(|_| Err("the daemon is stopping".into()))
    }
}

/// A fleet host's state in the daemon.
pub(super) struct FleetRun {
    pub(super) opts: FleetOptions,
    /// The bundle in force.
    pub(super) bundle: Unpacked,
    applied_at: String,
    /// Where it came from, in words ("etcd", or the disk and why).
    from: String,
    /// When the group's pointer was last read from etcd.
    last_sync: Option<SystemTime>,
    /// Since when, and why, etcd cannot be read (None: the last read worked).
    failing: Option<(SystemTime, String)>,
    /// Why the last bundle offered, or found at the start, was refused.
    refused: Option<String>,
    /// When etcd last took the host's state.
    reported: Arc<Mutex<Option<SystemTime>>>,
}

/// Puts the start's bundle in the run options: its policy (with the host's
/// cache directory) and its answer rate.
pub(super) fn adopt(opts: &mut RunOptions, bundle: &Unpacked) {
    let cache_dir = opts.policy.cache_dir.clone();
    opts.policy = bundle.tables.policy.clone();
    opts.policy.cache_dir = cache_dir;
    opts.reject_per_second = bundle.tables.reject_per_second;
}

/// Makes `bundle`, now in force, the last good one on disk; returns when it
/// was applied (now, if it could not be kept: it is in force all the same).
fn kept_on_disk(opts: &FleetOptions, state_dir: &Path, bundle: &Unpacked) -> String {
    host::commit(opts, state_dir, bundle).unwrap_or_else(|e| {
        log::error!("fleet {}: revision {} is in force but not kept on disk: {e}", opts.fleet, bundle.revision);
        crate::clock::rfc3339_millis(SystemTime::now())
    })
}

fn from_text(from: &StartedFrom) -> String {
    match from {
        StartedFrom::Etcd => "etcd".into(),
        StartedFrom::Disk { why } => format!("the last good bundle on disk ({why})"),
    }
}

impl FleetRun {
    /// After a start that put `start`'s bundle in force: it becomes the last
    /// good one (if it came from etcd), and the follower and the reporter start.
    pub(super) fn started(
        opts: &FleetOptions,
        state_dir: &Path,
        cache_dir: &Path,
        start: Start,
    ) -> Result<(FleetRun, tokio::sync::mpsc::Receiver<FleetMessage>)> {
        let applied_at = match &start.applied_at {
            Some(at) => at.clone(),
            None => kept_on_disk(opts, state_dir, &start.bundle),
        };
        let from = from_text(&start.from);
        match &start.from {
            StartedFrom::Etcd => log::info!(
                "fleet {}: group {} as host {}: revision {} from etcd",
                opts.fleet,
                opts.group,
                opts.host,
                start.bundle.revision
            ),
            StartedFrom::Disk { why } if start.refused.is_none() && why == "etcd has nothing newer" => log::info!(
                "fleet {}: group {} as host {}: revision {}, kept in {} (etcd has nothing newer)",
                opts.fleet,
                opts.group,
                opts.host,
                start.bundle.revision,
                start.bundle.dir.display()
            ),
            StartedFrom::Disk { why } => log::warn!(
                "fleet {}: group {} as host {}: enforcing the last good bundle, revision {} (applied {applied_at}), \
                 kept in {}: {why}",
                opts.fleet,
                opts.group,
                opts.host,
                start.bundle.revision,
                start.bundle.dir.display()
            ),
        }
        let state = HostState {
            host: opts.host.clone(),
            group: opts.group.clone(),
            revision: Some(start.bundle.revision),
            applied_at: Some(applied_at.clone()),
            error: start.refused.clone(),
        };
        let reporter = Reporter::spawn(
            opts,
            opts.etcd(host::REQUEST_TIMEOUT, host::REQUEST_TIMEOUT).map_err(anyhow::Error::msg)?,
            state.clone(),
        )
        .context("starting the fleet's reporter")?;
        // Bundles of many MiB come in one answer per file: more time than a get.
        let etcd = opts.etcd(host::BUNDLE_TIMEOUT, host::WATCH_ROUND).map_err(anyhow::Error::msg)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let follower = Follower {
            opts: opts.clone(),
            state_dir: state_dir.to_owned(),
            cache_dir: cache_dir.to_owned(),
            state,
            seen: start.bundle.sequence,
            reporter: reporter.clone(),
        };
        std::thread::Builder::new()
            .name("fleet-follow".into())
            .spawn(move || follower.run(&etcd, &mut DaemonHost { tx }))
            .context("starting the fleet's follower")?;
        let run = FleetRun {
            opts: opts.clone(),
            bundle: start.bundle,
            applied_at,
            from,
            last_sync: (start.from == StartedFrom::Etcd).then(SystemTime::now),
            failing: None,
            refused: start.refused,
            reported: reporter.reported,
        };
        Ok((run, rx))
    }

    pub(super) fn synced(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if let Some((since, _)) = self.failing.take() {
                    let secs = since.elapsed().map_or(0, |d| d.as_secs());
                    log::info!("fleet {}: etcd answers again (after {secs} s)", self.opts.fleet);
                }
                if self.last_sync.is_none() && self.from.starts_with("the last good bundle on disk (") {
                    // Read since: what is newer, the follower offers.
                    self.from = "the last good bundle on disk (etcd answers since)".into();
                }
                self.last_sync = Some(SystemTime::now());
            }
            Err(e) => {
                if self.failing.is_none() {
                    log::warn!(
                        "fleet {}: etcd unreachable ({e}); revision {} stays in force; retrying with backoff",
                        self.opts.fleet,
                        self.bundle.revision
                    );
                }
                let since = self.failing.as_ref().map_or_else(SystemTime::now, |(s, _)| *s);
                self.failing = Some((since, e));
            }
        }
    }

    /// The bundle offered was put in force: it is the last good one now.
    pub(super) fn applied(&mut self, state_dir: &Path) {
        self.applied_at = kept_on_disk(&self.opts, state_dir, &self.bundle);
        self.from = "etcd".into();
        self.refused = None;
    }

    pub(super) fn refused(&mut self, why: Option<&str>) {
        self.refused = why.map(str::to_owned);
    }

    pub(super) fn status(&self) -> FleetStatus {
        let now = SystemTime::now();
        let since = self.last_sync.and_then(|t| now.duration_since(t).ok());
        let stale = self.failing.is_some() || since.is_none_or(|d| d > host::STALE_AFTER);
        FleetStatus {
            fleet: self.opts.fleet.clone(),
            group: self.opts.group.clone(),
            host: self.opts.host.clone(),
            etcd: self.opts.endpoints.clone(),
            revision: self.bundle.revision,
            published: self.bundle.created.clone(),
            applied_at: self.applied_at.clone(),
            source: self.from.clone(),
            last_sync: self.last_sync.map(unix_secs),
            seconds_since_sync: since.map(|d| d.as_secs()),
            stale,
            etcd_error: self.failing.as_ref().map(|(_, e)| e.clone()),
            failing_since: self.failing.as_ref().map(|(t, _)| unix_secs(*t)),
            refused: self.refused.clone(),
            reported: self.reported.lock().unwrap_or_else(|p| p.into_inner()).map(unix_secs),
        }
    }
}
