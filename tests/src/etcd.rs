//! A three-member etcd cluster (Debian's etcd-server 3.4) on loopback for a
//! test: its own data directories and free ports; members can be killed and
//! started again; everything stops when dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

pub struct Cluster {
    pub dir: PathBuf,
    /// Client and peer ports of each member.
    ports: Vec<(u16, u16)>,
    members: Vec<Option<Child>>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// Starts three members and waits until the cluster answers.
    pub fn start(dir: &std::path::Path) -> Result<Cluster> {
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?));
        }
        let mut c = Cluster { dir: dir.to_owned(), ports, members: vec![None, None, None] };
        for i in 0..3 {
            c.start_member(i)?;
        }
        if !crate::wait_until(Duration::from_secs(20), || c.healthy()) {
            bail!("the etcd cluster did not become healthy: {}", c.log(0));
        }
        Ok(c)
    }

    /// The client URLs, comma-separated (as `--etcd` takes them).
    pub fn endpoints(&self) -> String {
        self.ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect::<Vec<_>>().join(",")
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i].0)
    }

    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let cluster: Vec<String> =
            self.ports.iter().enumerate().map(|(k, (_, p))| format!("e{k}=http://127.0.0.1:{p}")).collect();
        let (client, peer) = self.ports[i];
        let log = std::fs::File::create(self.dir.join(format!("e{i}.log")))?;
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}"), "--data-dir"])
            .arg(self.dir.join(format!("e{i}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd (setup installs etcd-server)")?;
        self.members[i] = Some(child);
        Ok(())
    }

    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether a quorum answers a linearizable read.
    pub fn healthy(&self) -> bool {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout=2s", "get", "health-probe"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("e{i}.log"))).unwrap_or_default()
    }

    /// Compacts the history up to `revision` (etcdctl compaction).
    pub fn compact(&self, revision: i64) -> Result<()> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "compaction", &revision.to_string()])
            .output()?;
        if !out.status.success() {
            bail!("etcdctl compaction: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill_member(i);
        }
    }
}
