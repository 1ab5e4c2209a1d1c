//! The whole world (every country, IPv4 + IPv6, from tests/data) compiled into
//! one deny table, from each source format: `cargo bench -p blocker-userspace --bench world`.
//!
//! Each format is measured twice in the same run: loading the source alone (the
//! baseline) and loading plus compiling, so the report can give the compiler's share
//! as a ratio as well as the absolute time.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use blocker::{
    compile::table::build_table,
    net::Family,
    policy::Policy,
    source::{
        fetch::{FetchOptions, UrlAccess},
        region::{db::RegionDb, load, Format, RegionSource},
    },
};
use blocker_tests::mmdb::{Layout, Writer};
use criterion::{criterion_group, criterion_main, Criterion};

fn test_data() -> PathBuf {
    blocker_tests::test_data()
}

/// The world in every format, written once to a temporary directory.
fn write_world(dir: &Path, db: &RegionDb) -> Vec<(&'static str, RegionSource)> {
    std::fs::create_dir_all(dir).unwrap();
    let (mut rir, mut csv) = (String::from("2|bench|20260201|0|19700101|20260201|+0000\n"), String::new());
    for r in db.regions.values() {
        for p in &r.prefixes {
            let (lo, hi) = p.range();
            match p.family {
                Family::V4 => {
                    let _ = writeln!(rir, "bench|{}|ipv4|{}|{}|20200101|allocated", r.code, p.to_ip(), hi - lo + 1);
                }
                Family::V6 => {
                    let _ = writeln!(rir, "bench|{}|ipv6|{}|{}|20200101|allocated", r.code, p.to_ip(), p.len);
                }
            }
            let end = blocker::net::Prefix { family: p.family, addr: hi, len: p.family.bits() }.to_ip();
            let _ = writeln!(csv, "{},{end},{}", p.to_ip(), r.code);
        }
    }
    std::fs::write(dir.join("world.rir"), rir).unwrap();
    std::fs::write(dir.join("world.csv"), csv).unwrap();
    // MMDB networks must be disjoint: take the compiled deny-all table's answer
    // (countries only: the never-block ranges are not a country).
    let all: Vec<String> = db.regions.keys().cloned().collect();
    let table = build_table(&Policy { deny_country: all, no_default_never_block: true, ..Default::default() }).unwrap();
    let mut w = Writer::new();
    for family in [Family::V4, Family::V6] {
        for r in table.entries(family) {
            let cc = table.lists[r.list].name.trim_start_matches("country:");
            for p in r.prefixes(family) {
                // IPv4 lives at ::/96 of the IPv6 tree.
                let len = if p.family == Family::V4 { p.len + 96 } else { p.len };
                w.insert(p.addr, len, cc, &Layout::GeoIp2);
            }
        }
    }
    w.alias_ipv4(0xffffu128 << 32, 96);
    std::fs::write(dir.join("world.mmdb"), w.finish()).unwrap();
    let src = |f: Format, path: PathBuf| RegionSource {
        optional: false,
        format: Some(f),
        location: path.display().to_string(),
        refresh: None,
    };
    vec![
        ("cidr-dir", src(Format::CidrDir, test_data().join("country-ip-blocks"))),
        ("rir", src(Format::Rir, dir.join("world.rir"))),
        ("csv", src(Format::Csv, dir.join("world.csv"))),
        ("mmdb", src(Format::Mmdb, dir.join("world.mmdb"))),
    ]
}

fn world(c: &mut Criterion) {
    let bundled = RegionDb::bundled().unwrap();
    let codes: Vec<String> = bundled.regions.keys().cloned().collect();
    let dir = std::env::temp_dir().join(format!("blocker-bench-{}", std::process::id()));
    let sources = write_world(&dir, &bundled);
    let cache = dir.join("cache");

    let mut g = c.benchmark_group("world");
    g.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    g.bench_function("bundled/load", |b| b.iter(|| RegionDb::bundled().unwrap()));
    g.bench_function("bundled/load+compile", |b| {
        b.iter(|| build_table(&Policy { deny_country: codes.clone(), ..Default::default() }).unwrap())
    });
    for (name, source) in &sources {
        // Every format yields the same table (MMDB: the same disjoint outcome).
        let t = build_table(&Policy {
            deny_country: codes.clone(),
            country_source: vec![source.clone()],
            cache_dir: cache.clone(),
            ..Default::default()
        })
        .unwrap();
        assert!(t.v4.len() > 100_000 && t.v6.len() > 30_000, "{name}: {} / {}", t.v4.len(), t.v6.len());
        g.bench_function(format!("{name}/load"), |b| {
            b.iter(|| load(source, &cache, UrlAccess::Fetch, &FetchOptions::default()).unwrap())
        });
        g.bench_function(format!("{name}/load+compile"), |b| {
            b.iter(|| {
                build_table(&Policy {
                    deny_country: codes.clone(),
                    country_source: vec![source.clone()],
                    cache_dir: cache.clone(),
                    ..Default::default()
                })
                .unwrap()
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Networks by owner: the full ASN table (the bundled snapshot) decoded,
/// and compiled with the countries in the policies the dataplane bench
/// measures per packet; the memory the decoded table holds; and, when `cargo
/// xtask snapshot-asn` has downloaded them into target/real-data, the
/// ip-location-db CSV files it comes from, read by the CSV reader.
fn asn(c: &mut Criterion) {
    use blocker::source::asn::{db::AsnDb, Asn, AsnSource};
    let me = std::process::id();
    let rss = || blocker_tests::proc_status_kib(me, "VmRSS:");
    let before = rss();
    let asns = AsnDb::bundled().unwrap();
    let held = rss().saturating_sub(before);
    let prefixes = asns.prefix_count();
    println!(
        "asn: {} systems, {prefixes} prefixes decoded from {} bytes of snapshot; {} MiB held ({} B a prefix)",
        asns.systems.len(),
        include_bytes!("../data/asn.snapshot").len(),
        held / 1024,
        held * 1024 / prefixes as u64
    );
    let bundled = RegionDb::bundled().unwrap();
    let mut by_size: Vec<(usize, Asn)> = asns.systems.values().map(|s| (s.prefixes.len(), s.asn)).collect();
    by_size.sort_by(|a, b| b.cmp(a));
    let policies = [
        (
            "deny 50 + half the countries",
            Policy {
                deny_country: bundled.regions.keys().step_by(2).cloned().collect(),
                deny_asn: by_size.iter().take(50).map(|(_, a)| *a).collect(),
                ..Default::default()
            },
        ),
        (
            "allowlist 2000",
            Policy {
                allow_only_asn: by_size.iter().take(2_000).map(|(_, a)| *a).collect(),
                confirm_allowlist_without_never_block: true,
                ..Default::default()
            },
        ),
        (
            "all + every country",
            Policy {
                deny_country: bundled.regions.keys().cloned().collect(),
                deny_asn: asns.systems.keys().copied().collect(),
                ..Default::default()
            },
        ),
    ];
    drop(asns);
    let mut g = c.benchmark_group("asn");
    g.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    g.bench_function("bundled/load", |b| b.iter(|| AsnDb::bundled().unwrap()));
    for (name, policy) in &policies {
        g.bench_function(format!("{name}/load+compile"), |b| b.iter(|| build_table(policy).unwrap()));
    }
    let real = blocker_tests::workspace_root().join("target/real-data");
    let csv = std::fs::read_dir(&real)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("package"))
        .find(|p| p.join("asn-ipv4.csv").is_file());
    match csv {
        Some(dir) => {
            let sources: Vec<AsnSource> = ["asn-ipv4.csv", "asn-ipv6.csv"]
                .iter()
                .map(|f| format!("csv:{}", dir.join(f).display()).parse().unwrap())
                .collect();
            let cache = std::env::temp_dir();
            g.bench_function("ip-location-db csv/load", |b| {
                b.iter(|| {
                    blocker::source::asn::load_all(&sources, &cache, UrlAccess::CachedOnly, &FetchOptions::default())
                        .unwrap()
                })
            });
        }
        None => println!(
            "asn: no ip-location-db CSV under {} (`cargo xtask snapshot-asn` downloads it): its row is not measured",
            real.display()
        ),
    }
    g.finish();
}

criterion_group!(benches, asn, world);
criterion_main!(benches);
