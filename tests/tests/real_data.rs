//! The parsers and the bundled snapshot against the real data in tests/data
//! (country-ip-blocks, an RIR delegation file), which ships with the repository.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use blocker::{
    net::Family,
    source::{
        cidr_list::read_list,
        region::{
            db::RegionDb,
            rir::{parse_rir, RIR_STATUSES},
        },
    },
};
use blocker_tests::test_data;

#[test]
fn real_country_files_parse() {
    let data = test_data();
    let dir = data.join("country-ip-blocks/country/de");
    assert!(dir.exists(), "shared data missing at {}", dir.display());
    let v4 = read_list(&dir.join("ipv4-aggregated.txt")).unwrap();
    let v6 = read_list(&dir.join("ipv6-aggregated.txt")).unwrap();
    assert!(v4.len() > 1000 && v4.iter().all(|p| p.family == Family::V4));
    assert!(v6.len() > 100 && v6.iter().all(|p| p.family == Family::V6));
}

#[test]
fn real_afrinic_file() {
    let path = test_data().join("rir/delegated-afrinic-extended-latest.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut db = RegionDb::default();
    parse_rir("afrinic", &text, &mut db).unwrap();
    db.normalize();
    // Every allocated/assigned IPv4 record's addresses, and nothing else, are covered.
    let mut expected: u128 = 0;
    let mut non_power_of_two = 0;
    for l in text.lines() {
        let f: Vec<&str> = l.split('|').collect();
        if f.len() >= 7 && f[2] == "ipv4" && RIR_STATUSES.contains(&f[6]) {
            let n: u128 = f[4].parse().unwrap();
            expected += n;
            non_power_of_two += usize::from(!n.is_power_of_two());
        }
    }
    assert!(non_power_of_two > 0, "the file has non-power-of-two counts");
    let covered: u128 = db
        .regions
        .values()
        .flat_map(|r| r.prefixes.iter().filter(|p| p.family == Family::V4))
        .map(|p| p.range().1 - p.range().0 + 1)
        .sum();
    assert_eq!(covered, expected);
    assert!(db.regions.contains_key("ZA") && db.regions["ZA"].count(Family::V6) > 0);
    assert!(!db.regions.contains_key("ZZ"));
}

#[test]
fn bundled_snapshot_matches_the_test_data() {
    let db = RegionDb::bundled().unwrap();
    let v4: usize = db.regions.values().map(|r| r.count(Family::V4)).sum();
    let v6: usize = db.regions.values().map(|r| r.count(Family::V6)).sum();
    // tests/data/README.md: 237 countries, 175,195 IPv4 and 67,839 IPv6 prefixes.
    assert_eq!((db.regions.len(), v4, v6), (237, 175_195, 67_839));
    assert_eq!(db.regions["DE"].name.as_deref(), Some("Germany"));
    let data = test_data().join("country-ip-blocks");
    let fresh = RegionDb::from_cidr_dir(&data, "x").unwrap();
    for (code, r) in &fresh.regions {
        assert_eq!(db.regions[code].prefixes, r.prefixes, "{code}");
    }
}
