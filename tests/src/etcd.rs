//! A three-member etcd cluster (Debian's etcd-server 3.4) for a test: on
//! loopback, or in a hub namespace that the hosts' namespaces reach through
//! veth pairs of their own (`Hub`); its own data directories and free ports;
//! members can be killed and started again; everything stops when dropped.

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
    /// The namespace the members run in (None: the test's own).
    ns: Option<String>,
    /// The address they listen on.
    addr: String,
}

/// A namespace that holds etcd at `HUB_ADDR`, and the veth pairs that join
/// each host's namespace to it (the hosts reach the hub, and only it).
pub struct Hub {
    pub ns: String,
    tag: String,
}

/// Where etcd listens in the hub.
pub const HUB_ADDR: &str = "10.255.0.1";

impl Hub {
    pub fn new() -> Result<Hub> {
        let tag = crate::unique_tag();
        let hub = Hub { ns: format!("blk-hub-{tag}"), tag };
        crate::sh("ip", &["netns", "add", &hub.ns])?;
        crate::sh("ip", &["-n", &hub.ns, "link", "set", "lo", "up"])?;
        crate::sh("ip", &["-n", &hub.ns, "addr", "add", &format!("{HUB_ADDR}/32"), "dev", "lo"])?;
        Ok(hub)
    }

    /// Joins namespace `ns` to the hub (link `i`: 10.255.i+1.0/24).
    pub fn connect(&self, ns: &str, i: u8) -> Result<()> {
        let (near, far) = (format!("bh{}{i}", self.tag), format!("bc{}{i}", self.tag));
        let net = format!("10.255.{}", u16::from(i) + 1);
        crate::sh("ip", &["link", "add", &near, "netns", &self.ns, "type", "veth", "peer", "name", &far, "netns", ns])?;
        crate::sh("ip", &["-n", &self.ns, "addr", "add", &format!("{net}.1/24"), "dev", &near])?;
        crate::sh("ip", &["-n", ns, "addr", "add", &format!("{net}.2/24"), "dev", &far])?;
        crate::sh("ip", &["-n", &self.ns, "link", "set", &near, "up"])?;
        crate::sh("ip", &["-n", ns, "link", "set", &far, "up"])?;
        crate::sh("ip", &["-n", ns, "route", "add", &format!("{HUB_ADDR}/32"), "via", &format!("{net}.1")])?;
        Ok(())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Deleting the namespace deletes its ends of the pairs, and so the pairs.
        let _ = crate::sh("ip", &["netns", "del", &self.ns]);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// Starts three members and waits until the cluster answers.
    pub fn start(dir: &std::path::Path) -> Result<Cluster> {
        Self::start_at(dir, None, "127.0.0.1")
    }

    /// Starts three members in the hub's namespace, listening on `HUB_ADDR`.
    pub fn start_in(dir: &std::path::Path, hub: &Hub) -> Result<Cluster> {
        Self::start_at(dir, Some(hub.ns.clone()), HUB_ADDR)
    }

    fn start_at(dir: &std::path::Path, ns: Option<String>, addr: &str) -> Result<Cluster> {
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?));
        }
        let mut c = Cluster { dir: dir.to_owned(), ports, members: vec![None, None, None], ns, addr: addr.to_owned() };
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
        self.ports.iter().map(|(c, _)| format!("http://{}:{c}", self.addr)).collect::<Vec<_>>().join(",")
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}:{}", self.addr, self.ports[i].0)
    }

    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let cluster: Vec<String> =
            self.ports.iter().enumerate().map(|(k, (_, p))| format!("e{k}=http://{}:{p}", self.addr)).collect();
        let (client, peer) = self.ports[i];
        let log = std::fs::File::create(self.dir.join(format!("e{i}.log")))?;
        let child = self
            .command("etcd")
            .args(["--name", &format!("e{i}"), "--data-dir"])
            .arg(self.dir.join(format!("e{i}")))
            .args(["--listen-client-urls", &format!("http://{}:{client}", self.addr)])
            .args(["--advertise-client-urls", &format!("http://{}:{client}", self.addr)])
            .args(["--listen-peer-urls", &format!("http://{}:{peer}", self.addr)])
            .args(["--initial-advertise-peer-urls", &format!("http://{}:{peer}", self.addr)])
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

    /// The process ids of the members running now.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().flatten().map(Child::id).collect()
    }

    /// Whether a quorum answers a linearizable read.
    pub fn healthy(&self) -> bool {
        self.command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout=2s", "get", "health-probe"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `program`, run in the cluster's namespace (nsenter execs it: the child is it).
    fn command(&self, program: &str) -> Command {
        match &self.ns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(program);
                c
            }
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("e{i}.log"))).unwrap_or_default()
    }

    /// Compacts the history up to `revision` (etcdctl compaction).
    pub fn compact(&self, revision: i64) -> Result<()> {
        let out = self
            .command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "compaction", &revision.to_string()])
            .output()?;
        if !out.status.success() {
            bail!("etcdctl compaction: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

/// One etcd member serving https only to clients with a certificate of the
/// test's CA (`--client-cert-auth`), with the files a client needs.
pub struct TlsMember {
    child: Child,
    pub endpoint: String,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsMember {
    pub fn start(dir: &std::path::Path) -> Result<TlsMember> {
        crate::certs::make_ca(dir, "/CN=blocker etcd test CA")?;
        // etcd's JSON gateway dials etcd itself with the server's
        // certificate: it must serve as a client certificate too.
        let server = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n";
        crate::certs::make_cert(dir, "server", "/CN=127.0.0.1", server)?;
        crate::certs::make_cert(dir, "client", "/CN=127.0.0.1", "extendedKeyUsage=clientAuth\n")?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "tls", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .arg("--cert-file")
            .arg(dir.join("server.pem"))
            .arg("--key-file")
            .arg(dir.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(dir.join("ca.pem"))
            .arg("--client-cert-auth")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd (setup installs etcd-server)")?;
        Ok(TlsMember {
            child,
            endpoint,
            ca: dir.join("ca.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        })
    }
}

impl Drop for TlsMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill_member(i);
        }
    }
}
