//! Two network namespaces joined by a veth pair. Traffic only ever flows between
//! them: every address used is assigned inside one of the two namespaces.
//!
//! `rx` is where blocker runs (on `rx_if`); `tx` sends. Besides its own address the
//! sender owns extra source addresses (`SOURCES_*`); the receiver routes them back
//! on-link. Neighbours are static, so no ARP/NDP exchange is needed, and none can
//! be dropped by a blocked source address.

use anyhow::{Context as _, Result};

use crate::{sh, unique_tag};

pub const RX_V4: &str = "192.0.2.1";
pub const TX_V4: &str = "192.0.2.2";
pub const RX_V6: &str = "2001:db8:1::1";
pub const TX_V6: &str = "2001:db8:1::2";
/// Source addresses the sender may use, with the on-link routes the receiver needs.
pub const SOURCES_V4: [&str; 3] = ["198.51.100.2", "203.0.113.2", "203.0.113.200"];
pub const SOURCES_V6: [&str; 3] = ["2001:db8:a::2", "2001:db8:b::2", "2001:db8:b:1::2"];
const ROUTES: [&str; 4] = ["198.51.100.0/24", "203.0.113.0/24", "2001:db8:a::/48", "2001:db8:b::/48"];

pub struct NetnsPair {
    pub rx_ns: String,
    pub tx_ns: String,
    pub rx_if: String,
    pub tx_if: String,
}

fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    sh("ip", &full)
}

fn mac_of(ns: &str, ifname: &str) -> Result<String> {
    let out = ip_in(ns, &["-o", "link", "show", ifname])?;
    out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).map(str::to_owned).context("no MAC address")
}

/// The reply count of ping's summary: "5 packets transmitted, 0 received, ...".
fn replies(out: &std::process::Output) -> Result<u32> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(',')
        .find_map(|part| part.trim().strip_suffix(" received").and_then(|n| n.parse().ok()))
        .with_context(|| format!("unexpected ping output: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

impl NetnsPair {
    pub fn new() -> Result<Self> {
        let tag = unique_tag();
        let pair = NetnsPair {
            rx_ns: format!("blk-rx-{tag}"),
            tx_ns: format!("blk-tx-{tag}"),
            rx_if: format!("bkr{tag}"),
            tx_if: format!("bkt{tag}"),
        };
        // From here on Drop removes whatever was created.
        pair.setup()?;
        Ok(pair)
    }

    fn setup(&self) -> Result<()> {
        sh("ip", &["netns", "add", &self.rx_ns])?;
        sh("ip", &["netns", "add", &self.tx_ns])?;
        self.add_link()
    }

    /// Deletes the veth pair (both ends), as when a device goes away.
    pub fn delete_link(&self) -> Result<()> {
        ip_in(&self.rx_ns, &["link", "del", &self.rx_if]).map(drop)
    }

    /// Creates the veth pair, with the same names and addresses (new devices, new
    /// interface indexes).
    pub fn add_link(&self) -> Result<()> {
        self.add_link_at(None)
    }

    /// `add_link`, with the receiving end at interface index `index` if given.
    pub fn add_link_at(&self, index: Option<u32>) -> Result<()> {
        let (rx, tx) = (self.rx_ns.as_str(), self.tx_ns.as_str());
        let index = index.map(|i| i.to_string());
        let mut args = vec!["link", "add", &self.rx_if, "netns", rx];
        if let Some(i) = &index {
            args.extend(["index", i.as_str()]);
        }
        args.extend(["type", "veth", "peer", "name", &self.tx_if, "netns", tx]);
        sh("ip", &args)?;
        for (ns, ifname) in [(rx, &self.rx_if), (tx, &self.tx_if)] {
            // Native XDP on veth needs an MTU that fits one page.
            ip_in(ns, &["link", "set", ifname, "mtu", "1500", "up"])?;
            ip_in(ns, &["link", "set", "lo", "up"])?;
        }
        ip_in(rx, &["addr", "add", &format!("{RX_V4}/24"), "dev", &self.rx_if])?;
        ip_in(tx, &["addr", "add", &format!("{TX_V4}/24"), "dev", &self.tx_if])?;
        ip_in(rx, &["addr", "add", &format!("{RX_V6}/64"), "dev", &self.rx_if, "nodad"])?;
        ip_in(tx, &["addr", "add", &format!("{TX_V6}/64"), "dev", &self.tx_if, "nodad"])?;
        for a in SOURCES_V4 {
            ip_in(tx, &["addr", "add", &format!("{a}/32"), "dev", &self.tx_if])?;
        }
        for a in SOURCES_V6 {
            ip_in(tx, &["addr", "add", &format!("{a}/128"), "dev", &self.tx_if, "nodad"])?;
        }
        for r in ROUTES {
            ip_in(rx, &["route", "add", r, "dev", &self.rx_if])?;
        }
        let rx_mac = mac_of(rx, &self.rx_if)?;
        let tx_mac = mac_of(tx, &self.tx_if)?;
        for a in [RX_V4, RX_V6] {
            ip_in(tx, &["neigh", "replace", a, "lladdr", &rx_mac, "dev", &self.tx_if, "nud", "permanent"])?;
        }
        for a in [TX_V4, TX_V6].into_iter().chain(SOURCES_V4).chain(SOURCES_V6) {
            ip_in(rx, &["neigh", "replace", a, "lladdr", &tx_mac, "dev", &self.rx_if, "nud", "permanent"])?;
        }
        Ok(())
    }

    /// Pings the receiver from `src` (one of the sender's addresses); returns how
    /// many replies came back.
    pub fn ping_from(&self, src: &str, count: u32) -> Result<u32> {
        let dst = if src.contains(':') { RX_V6 } else { RX_V4 };
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.tx_ns, "ping", "-n", "-q", "-c", &count.to_string()])
            .args(["-i", "0.05", "-W", "1", "-I", src, dst])
            .output()?;
        replies(&out)
    }

    /// Whether an XDP program is attached to the receiving interface.
    pub fn rx_has_xdp(&self) -> Result<bool> {
        self.has_xdp(&self.rx_if)
    }

    /// Whether an XDP program is attached to `ifname` in the receiving namespace.
    pub fn has_xdp(&self, ifname: &str) -> Result<bool> {
        let out = ip_in(&self.rx_ns, &["-d", "link", "show", ifname])?;
        Ok(out.contains("prog/xdp"))
    }

    /// Gives the sender one more source address (a /32 or /128 on its veth),
    /// and the receiver a route and a neighbour entry back to it over the
    /// veth: replies to it stay between the two namespaces, whatever network
    /// the address belongs to.
    pub fn add_source(&self, addr: &str) -> Result<()> {
        let (len, extra): (&str, &[&str]) = if addr.contains(':') { ("128", &["nodad"]) } else { ("32", &[]) };
        let with_len = format!("{addr}/{len}");
        let mut args = vec!["addr", "add", with_len.as_str(), "dev", &self.tx_if];
        args.extend(extra);
        ip_in(&self.tx_ns, &args)?;
        ip_in(&self.rx_ns, &["route", "add", addr, "dev", &self.rx_if])?;
        let tx_mac = mac_of(&self.tx_ns, &self.tx_if)?;
        ip_in(&self.rx_ns, &["neigh", "replace", addr, "lladdr", &tx_mac, "dev", &self.rx_if, "nud", "permanent"])?;
        Ok(())
    }

    /// Sends `frames` out of the sender's veth as they are (AF_PACKET), after
    /// writing the pair's Ethernet addresses into them unless `keep_macs`:
    /// crafted packets (extension-header chains, broadcasts) that no socket
    /// API makes.
    pub fn send_raw(&self, frames: &[Vec<u8>], keep_macs: bool) -> Result<()> {
        let parse_mac = |m: String| -> Result<[u8; 6]> {
            let bytes: Vec<u8> = m.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
            bytes.try_into().map_err(|_| anyhow::anyhow!("MAC {m}"))
        };
        let rx_mac = parse_mac(mac_of(&self.rx_ns, &self.rx_if)?)?;
        let tx_mac = parse_mac(mac_of(&self.tx_ns, &self.tx_if)?)?;
        let mut frames = frames.to_vec();
        if !keep_macs {
            for f in &mut frames {
                f[..6].copy_from_slice(&rx_mac);
                f[6..12].copy_from_slice(&tx_mac);
            }
        }
        let ifname = std::ffi::CString::new(self.tx_if.clone())?;
        crate::http::in_netns(&self.tx_ns, move || -> Result<()> {
            // SAFETY: plain syscalls on a socket this closure owns and closes.
            unsafe {
                let ifindex = libc::if_nametoindex(ifname.as_ptr());
                anyhow::ensure!(ifindex != 0, "no interface {ifname:?}");
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                anyhow::ensure!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = ifindex as i32;
                addr.sll_halen = 6;
                let mut result = Ok(());
                for f in &frames {
                    let sent = libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    if sent != f.len() as isize {
                        result = Err(anyhow::anyhow!("sendto: {}", std::io::Error::last_os_error()));
                        break;
                    }
                }
                libc::close(fd);
                result
            }
        })?
    }

    /// A counter of the receiving namespace's stack: `section` is `Ip6` (from
    /// /proc/net/snmp6, e.g. `Ip6InReceives`) or a section of /proc/net/snmp
    /// (`Ip`, `Tcp`, `Udp`, with e.g. `InSegs`).
    pub fn rx_snmp(&self, section: &str, name: &str) -> Result<u64> {
        let ns = format!("--net=/run/netns/{}", self.rx_ns);
        if section == "Ip6" {
            let text = sh("nsenter", &[&ns, "cat", "/proc/net/snmp6"])?;
            return text
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
                .with_context(|| format!("no {name} in snmp6"));
        }
        let text = sh("nsenter", &[&ns, "cat", "/proc/net/snmp"])?;
        let prefix = format!("{section}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (lines.next().context("no names line")?, lines.next().context("no values line")?);
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .with_context(|| format!("no {section} {name} in snmp"))
    }

    /// The receiving interface's index.
    pub fn rx_index(&self) -> Result<u32> {
        let out = ip_in(&self.rx_ns, &["-o", "link", "show", &self.rx_if])?;
        out.split(':').next().and_then(|i| i.trim().parse().ok()).context("no interface index")
    }

    /// Renames both ends of the pair to `<letter><tag>` names and strips their
    /// addresses and routes, so that `add_link` can make a new pair with the old
    /// names (as when an operator renames eth0 and another device takes the name).
    /// Returns the receiving end's new name.
    pub fn rename_away(&self, letter: char) -> Result<String> {
        let tag = &self.rx_if[3..];
        let (new_rx, new_tx) = (format!("bk{letter}{tag}"), format!("bt{letter}{tag}"));
        for (ns, old, new) in [(&self.rx_ns, &self.rx_if, &new_rx), (&self.tx_ns, &self.tx_if, &new_tx)] {
            ip_in(ns, &["link", "set", "dev", old, "down"])?;
            ip_in(ns, &["link", "set", "dev", old, "name", new])?;
            ip_in(ns, &["addr", "flush", "dev", new])?;
            ip_in(ns, &["route", "flush", "dev", new])?;
            ip_in(ns, &["-6", "route", "flush", "dev", new])?;
            ip_in(ns, &["link", "set", "dev", new, "up"])?;
        }
        Ok(new_rx)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and so the pair.
        let _ = sh("ip", &["netns", "del", &self.rx_ns]);
        let _ = sh("ip", &["netns", "del", &self.tx_ns]);
    }
}

/// A second link into the receiving namespace, from a third namespace, on its own
/// subnet (198.18.0.0/24, the benchmarking range of RFC 2544): for a daemon that
/// protects two interfaces.
pub struct ExtraLink {
    pub tx_ns: String,
    pub rx_if: String,
    pub tx_if: String,
}

pub const EXTRA_RX_V4: &str = "198.18.0.1";
pub const EXTRA_TX_V4: &str = "198.18.0.2";

impl ExtraLink {
    pub fn new(pair: &NetnsPair) -> Result<Self> {
        let tag = unique_tag();
        let link =
            ExtraLink { tx_ns: format!("blk-tx2-{tag}"), rx_if: format!("bkR{tag}"), tx_if: format!("bkT{tag}") };
        sh("ip", &["netns", "add", &link.tx_ns])?;
        let rx = pair.rx_ns.as_str();
        let tx = link.tx_ns.as_str();
        sh("ip", &["link", "add", &link.rx_if, "netns", rx, "type", "veth", "peer", "name", &link.tx_if, "netns", tx])?;
        ip_in(rx, &["link", "set", &link.rx_if, "up"])?;
        ip_in(tx, &["link", "set", &link.tx_if, "up"])?;
        ip_in(rx, &["addr", "add", &format!("{EXTRA_RX_V4}/24"), "dev", &link.rx_if])?;
        ip_in(tx, &["addr", "add", &format!("{EXTRA_TX_V4}/24"), "dev", &link.tx_if])?;
        let rx_mac = mac_of(rx, &link.rx_if)?;
        let tx_mac = mac_of(tx, &link.tx_if)?;
        ip_in(tx, &["neigh", "replace", EXTRA_RX_V4, "lladdr", &rx_mac, "dev", &link.tx_if, "nud", "permanent"])?;
        ip_in(rx, &["neigh", "replace", EXTRA_TX_V4, "lladdr", &tx_mac, "dev", &link.rx_if, "nud", "permanent"])?;
        Ok(link)
    }

    /// Pings the receiver's address on this link; returns the replies received.
    pub fn ping(&self, count: u32) -> Result<u32> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.tx_ns, "ping", "-n", "-q", "-c", &count.to_string()])
            .args(["-i", "0.05", "-W", "1", EXTRA_RX_V4])
            .output()?;
        replies(&out)
    }
}

impl Drop for ExtraLink {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.tx_ns]);
    }
}

/// A ping running in the background from one of the sender's addresses.
pub struct BackgroundPing {
    child: std::process::Child,
}

impl NetnsPair {
    /// Starts `count` pings from `src`, one every `interval` seconds.
    pub fn ping_in_background(&self, src: &str, count: u32, interval: &str) -> Result<BackgroundPing> {
        let dst = if src.contains(':') { RX_V6 } else { RX_V4 };
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.tx_ns, "ping", "-n", "-q", "-c", &count.to_string()])
            .args(["-i", interval, "-W", "1", "-I", src, dst])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        Ok(BackgroundPing { child })
    }
}

impl BackgroundPing {
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the pings now (SIGINT: ping prints its summary): (sent, replies).
    pub fn stop(self) -> Result<(u32, u32)> {
        // SAFETY: signalling our own child, which has not been waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// Waits for the pings to finish: (sent, replies received).
    pub fn finish(self) -> Result<(u32, u32)> {
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |suffix: &str| {
            text.split(',')
                .find_map(|part| {
                    let part = part.trim();
                    let part = part.rsplit('\n').next().unwrap_or(part);
                    part.strip_suffix(suffix).and_then(|n| n.trim().parse().ok())
                })
                .with_context(|| format!("unexpected ping output: {text}"))
        };
        Ok((field(" packets transmitted")?, field(" received")?))
    }
}

/// How a TCP connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    /// Connected and answered.
    Answered,
    /// Refused at once (a RST came back).
    Refused,
    /// No answer within the timeout (dropped).
    TimedOut,
    /// curl's exit code for anything else.
    Other(i32),
}

impl NetnsPair {
    /// Serves a minimal HTTP answer on `port` of every address of the receiving
    /// namespace, from a thread of this process, for as long as the process runs.
    pub fn serve_http(&self, port: u16) -> Result<()> {
        serve_http_in(&self.rx_ns, port)
    }

    /// The same in the sending namespace, on every address it owns.
    pub fn serve_http_in_sender(&self, port: u16) -> Result<()> {
        serve_http_in(&self.tx_ns, port)
    }

    /// An HTTP request from the receiver (where blocker runs) to `dst`, one of
    /// the sender's addresses, and how it ended: the outbound direction.
    pub fn connect_to(&self, dst: &str, port: u16, timeout: &str) -> Result<Connect> {
        let host = if dst.contains(':') { format!("[{dst}]") } else { dst.to_owned() };
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.rx_ns))
            .args(["curl", "-s", "-o", "/dev/null", "--connect-timeout", timeout, "--max-time", "5"])
            .arg(format!("http://{host}:{port}/"))
            .output()?;
        Ok(Connect::of(&out))
    }

    /// An HTTP request from the sender's address `src` to the receiver's `port`
    /// (curl, `--connect-timeout` of `timeout` seconds), and how it ended.
    pub fn connect_from(&self, src: &str, port: u16, timeout: &str) -> Result<Connect> {
        let dst = if src.contains(':') { format!("[{RX_V6}]") } else { RX_V4.to_owned() };
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.tx_ns, "curl", "-s", "-o", "/dev/null", "--interface", src])
            .args(["--connect-timeout", timeout, "--max-time", "5", &format!("http://{dst}:{port}/")])
            .output()?;
        Ok(Connect::of(&out))
    }
}

impl Connect {
    /// How a curl run ended, by its exit code.
    fn of(out: &std::process::Output) -> Connect {
        match out.status.code() {
            Some(0) => Connect::Answered,
            Some(7) => Connect::Refused,
            Some(28) => Connect::TimedOut,
            Some(code) => Connect::Other(code),
            None => Connect::Other(-1),
        }
    }
}

/// Serves a minimal HTTP answer on `port` of every address of namespace `ns`,
/// from a thread of this process, for as long as the process runs.
fn serve_http_in(ns: &str, port: u16) -> Result<()> {
    let listener = crate::http::in_netns(ns, move || std::net::TcpListener::bind(("::", port)))??;
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    Ok(())
}
