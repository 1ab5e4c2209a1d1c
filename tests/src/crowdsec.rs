//! A private CrowdSec LAPI (Debian's crowdsec 1.4.6) for a test: its own
//! config, database and port, run inside a test namespace (where the daemon
//! pulls from it over loopback), stopped when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub struct Lapi {
    pub dir: PathBuf,
    pub ns: String,
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
    tls: bool,
}

/// Replaces `from` with `to` in `text`, or says which setting was not found.
fn set(text: &mut String, from: &str, to: &str) -> Result<()> {
    if !text.contains(from) {
        bail!("/etc/crowdsec/config.yaml has no {from:?}: another crowdsec version?");
    }
    *text = text.replacen(from, to, 1);
    Ok(())
}

/// The certificates of a LAPI served over TLS: a CA of the test's own, the
/// server's, and a bouncer's client certificate (OU bouncer-ou, which the LAPI
/// takes as a bouncer's credentials).
pub struct Certs {
    pub ca: PathBuf,
    pub bouncer_cert: PathBuf,
    pub bouncer_key: PathBuf,
}

/// Makes the CA, the server's certificate for 127.0.0.1 and a bouncer's.
fn make_certs(dir: &Path) -> Result<(Certs, PathBuf, PathBuf)> {
    crate::certs::make_ca(dir, "/CN=blocker test CA")?;
    crate::certs::make_cert(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    crate::certs::make_cert(dir, "bouncer", "/OU=bouncer-ou/CN=blocker", "extendedKeyUsage=clientAuth\n")?;
    let certs =
        Certs { ca: dir.join("ca.pem"), bouncer_cert: dir.join("bouncer.pem"), bouncer_key: dir.join("bouncer.key") };
    Ok((certs, dir.join("server.pem"), dir.join("server.key")))
}

impl Lapi {
    /// Configures a LAPI in `dir` listening on 127.0.0.1:`port` inside `ns`
    /// (with a machine for cscli), and starts it.
    pub fn start(dir: &Path, ns: &str, port: u16) -> Result<Lapi> {
        Self::start_with(dir, ns, port, false).map(|(l, _)| l)
    }

    /// `start`, over TLS: bouncers may authenticate with a client
    /// certificate. Returns the certificates too.
    pub fn start_tls(dir: &Path, ns: &str, port: u16) -> Result<(Lapi, Certs)> {
        let (l, certs) = Self::start_with(dir, ns, port, true)?;
        Ok((l, certs.context("certificates")?))
    }

    fn start_with(dir: &Path, ns: &str, port: u16, tls: bool) -> Result<(Lapi, Option<Certs>)> {
        let mut c = std::fs::read_to_string("/etc/crowdsec/config.yaml").context("crowdsec is not installed")?;
        let d = dir.display();
        for sub in ["log", "data"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        set(&mut c, "daemonize: true", "daemonize: false")?;
        set(&mut c, "log_dir: /var/log/", &format!("log_dir: {d}/log/"))?;
        set(&mut c, "data_dir: /var/lib/crowdsec/data/", &format!("data_dir: {d}/data/"))?;
        // WAL: without it a bulk import beside a bouncer's pulls fails with
        // "database is locked" (CrowdSec's own advice).
        set(
            &mut c,
            "db_path: /var/lib/crowdsec/data/crowdsec.db",
            &format!("db_path: {d}/data/crowdsec.db\n  use_wal: true"),
        )?;
        set(
            &mut c,
            "credentials_path: /etc/crowdsec/local_api_credentials.yaml",
            &format!("credentials_path: {d}/local_api_credentials.yaml"),
        )?;
        let mut certs = None;
        if tls {
            let (made, cert, key) = make_certs(dir)?;
            set(
                &mut c,
                "listen_uri: 127.0.0.1:8080",
                &format!(
                    "listen_uri: 127.0.0.1:{port}\n    tls:\n      cert_file: {}\n      key_file: {}\n      \
                     client_verification: VerifyClientCertIfGiven\n      ca_cert_path: {}\n      \
                     bouncers_allowed_ou:\n        - bouncer-ou\n      agents_allowed_ou:\n        - agent-ou",
                    cert.display(),
                    key.display(),
                    made.ca.display()
                ),
            )?;
            certs = Some(made);
        } else {
            set(&mut c, "listen_uri: 127.0.0.1:8080", &format!("listen_uri: 127.0.0.1:{port}"))?;
        }
        set(&mut c, "listen_port: 6060", &format!("listen_port: {}", port + 1))?;
        // No Central API: the online_client block goes.
        let lines: Vec<&str> = c.lines().collect();
        let mut kept = Vec::new();
        let mut skip = 0;
        for l in lines {
            if l.trim_start().starts_with("online_client:") {
                skip = 2;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            kept.push(l);
        }
        let config = dir.join("config.yaml");
        std::fs::write(&config, kept.join("\n") + "\n")?;
        let mut lapi = Lapi { dir: dir.to_owned(), ns: ns.to_owned(), port, config, child: None, tls };
        let creds = dir.join("local_api_credentials.yaml").display().to_string();
        lapi.cscli(&["machines", "add", "test", "-a", "-f", &creds, "--force"])?;
        // cscli reaches this LAPI at its own URL (and over TLS trusts its CA).
        let text = std::fs::read_to_string(&creds)?;
        let mut fixed: String = text.lines().filter(|l| !l.starts_with("url:")).map(|l| format!("{l}\n")).collect();
        fixed.push_str(&format!("url: {}\n", lapi.url()));
        if let Some(c) = &certs {
            fixed.push_str(&format!("ca_cert_path: {}\n", c.ca.display()));
        }
        std::fs::write(&creds, fixed)?;
        lapi.run()?;
        Ok((lapi, certs))
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/", if self.tls { "https" } else { "http" }, self.port)
    }

    /// Starts the LAPI (again) and waits until it answers.
    pub fn run(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("run.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["crowdsec", "-c"])
            .arg(&self.config)
            .arg("-no-cs")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start crowdsec")?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            // Up: it refuses an unknown key (403).
            let out = self.in_ns("curl", &["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", &self.url()])?;
            if String::from_utf8_lossy(&out.stdout).starts_with('4') {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("the LAPI did not start: {}", std::fs::read_to_string(self.dir.join("run.log")).unwrap_or_default())
    }

    /// Kills the LAPI (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn in_ns(&self, program: &str, args: &[&str]) -> Result<Output> {
        Ok(Command::new("nsenter").arg(format!("--net=/run/netns/{}", self.ns)).arg(program).args(args).output()?)
    }

    /// `cscli -c CONFIG ARGS` (in the namespace: it talks to the LAPI);
    /// fails with its output unless it succeeds.
    pub fn cscli(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-c", self.config.to_str().context("path")?];
        full.extend_from_slice(args);
        let out = self.in_ns("cscli", &full)?;
        if !out.status.success() {
            bail!("cscli {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How many decisions the LAPI's stream holds, as a bouncer with the key
    /// in `key_file` gets them in a full pull.
    pub fn active(&self, key_file: &Path) -> usize {
        let key = std::fs::read_to_string(key_file).unwrap_or_default();
        let url = format!("{}v1/decisions/stream?startup=true", self.url());
        let out = self.in_ns("curl", &["-s", "-k", "-H", &format!("X-Api-Key: {key}"), &url]);
        out.map(|o| String::from_utf8_lossy(&o.stdout).matches("\"id\":").count()).unwrap_or(0)
    }

    /// A bouncer's API key, written to a file of the test's.
    pub fn bouncer(&self, name: &str) -> Result<PathBuf> {
        let key = format!("{name}-key-{}", std::process::id());
        self.cscli(&["bouncers", "add", name, "-k", &key])?;
        let path = self.dir.join(format!("{name}.key"));
        std::fs::write(&path, &key)?;
        Ok(path)
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.kill();
    }
}
