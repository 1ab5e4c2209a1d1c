//! A minimal MaxMind DB writer, for tests and benchmarks of blocker's MMDB reader:
//! IPv6 tree, 24-bit records, one data map per network with the given layout.
//! Networks must not overlap (insert a disjoint set).

use std::collections::HashMap;

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(u32),
    Data(u32),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// {"country": {"iso_code": CC}}
    GeoIp2,
    /// {"country_code": CC}
    IpLocationDb,
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    // Sizes of 29 and more take one or two bytes after the control byte.
    let (small, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => panic!("size {size} too large for this writer"),
    };
    if kind <= 7 {
        out.push((kind << 5) | small);
    } else {
        out.push(small);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

pub struct Writer {
    nodes: Vec<[Rec; 2]>,
    data: Vec<u8>,
    /// One data record per (country, layout), shared by all its networks.
    records: HashMap<(String, Layout), u32>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Writer { nodes: vec![[Rec::Empty, Rec::Empty]], data: Vec::new(), records: HashMap::new() }
    }

    fn walk(&mut self, bits: u128, len: u8) -> (usize, usize) {
        let mut node = 0usize;
        for depth in 0..len - 1 {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            node = match self.nodes[node][bit] {
                Rec::Node(n) => n as usize,
                _ => {
                    self.nodes.push([Rec::Empty, Rec::Empty]);
                    let n = self.nodes.len() - 1;
                    self.nodes[node][bit] = Rec::Node(n as u32);
                    n
                }
            };
        }
        (node, ((bits >> (128 - u32::from(len))) & 1) as usize)
    }

    /// Inserts `bits/len` (IPv6 space; IPv4 goes at ::/96) with a country record.
    pub fn insert(&mut self, bits: u128, len: u8, cc: &str, layout: &Layout) {
        let offset = match self.records.get(&(cc.to_owned(), *layout)) {
            Some(&o) => o,
            None => self.record(cc, layout),
        };
        let (node, bit) = self.walk(bits, len);
        self.nodes[node][bit] = Rec::Data(offset);
    }

    fn record(&mut self, cc: &str, layout: &Layout) -> u32 {
        let offset = self.data.len() as u32;
        self.records.insert((cc.to_owned(), *layout), offset);
        match layout {
            Layout::GeoIp2 => {
                control(&mut self.data, 7, 1);
                string(&mut self.data, "country");
                control(&mut self.data, 7, 1);
                string(&mut self.data, "iso_code");
                string(&mut self.data, cc);
            }
            Layout::IpLocationDb => {
                control(&mut self.data, 7, 1);
                string(&mut self.data, "country_code");
                string(&mut self.data, cc);
            }
        }
        offset
    }

    /// Inserts `bits/len` with a GeoLite2-ASN record:
    /// `{"autonomous_system_number": asn, "autonomous_system_organization": org}`.
    pub fn insert_asn(&mut self, bits: u128, len: u8, asn: u32, org: &str) {
        let offset = self.data.len() as u32;
        control(&mut self.data, 7, 2);
        string(&mut self.data, "autonomous_system_number");
        uint(&mut self.data, 6, u64::from(asn));
        string(&mut self.data, "autonomous_system_organization");
        string(&mut self.data, org);
        let (node, bit) = self.walk(bits, len);
        self.nodes[node][bit] = Rec::Data(offset);
    }

    /// Makes `alias/len` lead to the same subtree as `::/96`, as real databases do.
    pub fn alias_ipv4(&mut self, alias: u128, len: u8) {
        let (v4root, _) = self.walk(0, 97);
        let (node, bit) = self.walk(alias, len);
        self.nodes[node][bit] = Rec::Node(v4root as u32);
    }

    /// Crafts a hostile tree: along the path of `bits/len`, each node's other child
    /// becomes the same node as the path's child. The tree is then a chain whose
    /// nodes are shared, with 2^(len-1) paths to the leaf.
    pub fn share_nodes_along(&mut self, bits: u128, len: u8) {
        let mut node = 0usize;
        for depth in 0..len - 1 {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            let next = self.nodes[node][bit];
            self.nodes[node][1 - bit] = next;
            match next {
                Rec::Node(n) => node = n as usize,
                _ => return,
            }
        }
    }

    pub fn finish(self) -> Vec<u8> {
        let count = self.nodes.len() as u32;
        let mut out = Vec::new();
        for n in &self.nodes {
            for r in n {
                let v = match *r {
                    Rec::Empty => count,
                    Rec::Node(i) => i,
                    Rec::Data(off) => count + 16 + off,
                };
                out.extend_from_slice(&v.to_be_bytes()[1..]);
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(METADATA_MARKER);
        control(&mut out, 7, 9);
        string(&mut out, "node_count");
        uint(&mut out, 6, u64::from(count));
        string(&mut out, "record_size");
        uint(&mut out, 5, 24);
        string(&mut out, "ip_version");
        uint(&mut out, 5, 6);
        string(&mut out, "database_type");
        string(&mut out, "Test-Country");
        string(&mut out, "binary_format_major_version");
        uint(&mut out, 5, 2);
        string(&mut out, "binary_format_minor_version");
        uint(&mut out, 5, 0);
        string(&mut out, "build_epoch");
        uint(&mut out, 9, 1_700_000_000);
        string(&mut out, "description");
        control(&mut out, 7, 1);
        string(&mut out, "en");
        string(&mut out, "blocker test database");
        string(&mut out, "languages");
        control(&mut out, 11, 1);
        string(&mut out, "en");
        out
    }
}
