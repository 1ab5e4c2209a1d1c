//! The ASN source formats: `start,end,asn[,organisation]` CSV (DB-IP,
//! ip-location-db), iptoasn's TSV, and MaxMind GeoLite2-ASN databases.
//! Every record names its line (or network) when it is refused.

use super::{db::AsnDb, Asn};
use crate::{
    net::{range_prefixes, Family},
    source::region::{parse_csv_address, record_error, RegionError},
};

/// The most fields a CSV record may have (real ones have 4).
const MAX_FIELDS: usize = 16;
/// The most systems and prefixes one source may hold: over ten times the full
/// table (91k systems, 732k prefixes), so that a hostile or mistaken file is
/// refused before it takes the host's memory.
pub const MAX_SYSTEMS: usize = 1_000_000;
pub const MAX_PREFIXES: usize = 10_000_000;

/// Splits one CSV record: fields separated by commas, optionally in double
/// quotes (which may hold commas, and `""` for a quote).
pub fn split_csv(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        if fields.len() == MAX_FIELDS {
            return Err("more than 16 fields");
        }
        let mut field = String::new();
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed"),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err("text after a closing quote"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_owned());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            field = field.trim().to_owned();
        }
        fields.push(field);
    }
}

/// An AS number field: `13335` or `AS13335`; 0 (unrouted) is None.
fn asn_field(text: &str) -> Result<Option<Asn>, &'static str> {
    let digits = text.strip_prefix("AS").or_else(|| text.strip_prefix("as")).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the AS number is not a number");
    }
    match digits.parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(Asn(n))),
        Err(_) => Err("the AS number is over 4294967295"),
    }
}

/// Adds one range row (already split) to the database; `prefixes` counts
/// what the source added so far.
fn add_range(
    db: &mut AsnDb,
    prefixes: &mut usize,
    start: (Family, u128),
    end: (Family, u128),
    asn: Option<Asn>,
    org: Option<&str>,
) -> Result<(), &'static str> {
    if start.0 != end.0 {
        return Err("start and end are of different address families");
    }
    if end.1 < start.1 {
        return Err("end address before start address");
    }
    if let Some(asn) = asn {
        let cut: Vec<_> = range_prefixes(start.0, start.1, end.1).collect();
        *prefixes += cut.len();
        check_size(db, *prefixes)?;
        db.add(asn, org, cut);
    }
    Ok(())
}

fn check_size(db: &AsnDb, prefixes: usize) -> Result<(), &'static str> {
    if prefixes > MAX_PREFIXES {
        return Err("more than 10,000,000 prefixes: over ten times a full ASN table, refused");
    }
    if db.systems.len() >= MAX_SYSTEMS {
        return Err("more than 1,000,000 systems: over ten times a full ASN table, refused");
    }
    Ok(())
}

/// `start,end,asn[,organisation]`: addresses dotted/colon or numeric; a header
/// line is skipped; AS0 rows (unrouted space) are skipped.
pub fn parse_csv(source: &str, text: &str, db: &mut AsnDb) -> Result<(), RegionError> {
    let (mut rows, mut prefixes) = (0usize, 0usize);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| record_error(source, i + 1, raw, reason);
        let f = split_csv(line).map_err(err)?;
        if f.len() < 3 {
            return Err(err("expected start,end,asn[,organisation]"));
        }
        let (Some(start), Some(end)) = (parse_csv_address(&f[0]), parse_csv_address(&f[1])) else {
            let is_word = |x: &str| !x.is_empty() && !x.contains(|c: char| c.is_ascii_digit() || c == '.' || c == ':');
            if rows == 0 && i == 0 && is_word(&f[0]) && is_word(&f[1]) {
                continue; // a header
            }
            return Err(err("bad start or end address"));
        };
        rows += 1;
        let asn = asn_field(&f[2]).map_err(err)?;
        add_range(db, &mut prefixes, start, end, asn, f.get(3).map(String::as_str)).map_err(err)?;
    }
    if rows == 0 {
        return Err(RegionError::Empty {
            source_name: source.to_owned(),
            what: "rows",
            format: "start,end,asn[,organisation] CSV",
        });
    }
    Ok(())
}

/// iptoasn's `range_start range_end AS_number country_code AS_description`,
/// tab-separated (addresses dotted/colon or numeric); AS0 ("Not routed") rows
/// are skipped.
pub fn parse_tsv(source: &str, text: &str, db: &mut AsnDb) -> Result<(), RegionError> {
    let (mut rows, mut prefixes) = (0usize, 0usize);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| record_error(source, i + 1, raw, reason);
        let f: Vec<&str> = line.splitn(5, '\t').map(str::trim).collect();
        if f.len() < 3 {
            return Err(err("expected start, end, AS number, country, description separated by tabs"));
        }
        let (Some(start), Some(end)) = (parse_csv_address(f[0]), parse_csv_address(f[1])) else {
            return Err(err("bad start or end address"));
        };
        rows += 1;
        let asn = asn_field(f[2]).map_err(err)?;
        let org = f.get(4).copied().filter(|d| *d != "Not routed");
        add_range(db, &mut prefixes, start, end, asn, org).map_err(err)?;
    }
    if rows == 0 {
        return Err(RegionError::Empty { source_name: source.to_owned(), what: "rows", format: "iptoasn TSV" });
    }
    Ok(())
}

/// A GeoLite2-ASN layout database: `autonomous_system_number` and
/// `autonomous_system_organization` of every network.
pub fn read_mmdb(bytes: &[u8], source: &str, db: &mut AsnDb) -> Result<(), RegionError> {
    use maxminddb::PathElement::Key;
    let mut networks = 0usize;
    crate::source::region::mmdb::walk(bytes, source, |prefix, network, result| {
        let number = result
            .decode_path::<u32>(&[Key("autonomous_system_number")])
            .map_err(|e| format!("bad record for {network}: {e}"))?;
        let Some(asn) = number else { return Ok(()) };
        if asn == 0 {
            return Ok(());
        }
        let org = result
            .decode_path::<String>(&[Key("autonomous_system_organization")])
            .map_err(|e| format!("bad record for {network}: {e}"))?;
        networks += 1;
        check_size(db, networks).map_err(|e| format!("network {network}: {e}"))?;
        db.add(Asn(asn), org.as_deref(), [prefix]);
        Ok(())
    })?;
    if networks == 0 {
        return Err(RegionError::Mmdb {
            source_name: source.to_owned(),
            reason: "no network carries an autonomous_system_number: not an ASN database?".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(db: &AsnDb, asn: u32) -> Vec<String> {
        db.systems[&Asn(asn)].prefixes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn csv_fields_quoted_with_commas_and_quotes() {
        assert_eq!(split_csv("a, b ,\"c, d\"").unwrap(), ["a", "b", "c, d"]);
        assert_eq!(split_csv("\"say \"\"hi\"\"\",x").unwrap(), ["say \"hi\"", "x"]);
        assert_eq!(split_csv("a,").unwrap(), ["a", ""]);
        assert_eq!(split_csv("\"open").unwrap_err(), "a quoted field is not closed");
        assert_eq!(split_csv("\"a\"b").unwrap_err(), "text after a closing quote");
        assert!(split_csv(&",".repeat(40)).is_err());
    }

    #[test]
    fn csv_ip_location_db_layouts() {
        let text = "start,end,asn,org\n\
                    1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n\
                    16778240,16779263,38803,Gtelecom Pty Ltd\n\
                    2001:4:112::,2001:4:112:ffff:ffff:ffff:ffff:ffff,AS112,DNS-OARC\n\
                    10.0.0.0,10.255.255.255,0,\n\
                    1.0.1.0,1.0.1.255,13335\n";
        let mut db = AsnDb::default();
        parse_csv("a.csv", text, &mut db).unwrap();
        db.normalize();
        assert_eq!(strs(&db, 13335), ["1.0.0.0/24", "1.0.1.0/24"]);
        assert_eq!(db.systems[&Asn(13335)].org.as_deref(), Some("Cloudflare, Inc."));
        assert_eq!(strs(&db, 38803), ["1.0.4.0/22"]);
        assert_eq!(strs(&db, 112), ["2001:4:112::/48"]);
        assert_eq!(db.systems.len(), 3, "AS0 rows are unrouted space");
    }

    #[test]
    fn csv_and_tsv_errors_name_the_line() {
        let mut db = AsnDb::default();
        let e = parse_csv("a.csv", "1.0.0.0,1.0.0.255,13335\n1.0.1.0,1.0.0.0,5\n", &mut db).unwrap_err();
        assert_eq!(e.to_string(), "a.csv:2: end address before start address: \"1.0.1.0,1.0.0.0,5\"");
        let e = parse_csv("a.csv", "1.0.0.0,1.0.0.255,Cloudflare\n", &mut db).unwrap_err();
        assert!(e.to_string().contains("a.csv:1: the AS number is not a number"), "{e}");
        let e = parse_csv("a.csv", "1.0.0.0,1.0.0.255,99999999999\n", &mut db).unwrap_err();
        assert!(e.to_string().contains("over 4294967295"), "{e}");
        let e = parse_csv("a.csv", "1.0.0.0,::1,5\n", &mut db).unwrap_err();
        assert!(e.to_string().contains("different address families"), "{e}");
        let e = parse_csv("a.csv", "1.0.0.0,1.0.0.255,5,\"open\n", &mut db).unwrap_err();
        assert!(e.to_string().contains("not closed"), "{e}");
        assert!(matches!(parse_csv("a.csv", "", &mut db), Err(RegionError::Empty { .. })));
        let e = parse_tsv("t.tsv", "1.0.0.0\t1.0.0.255\t13335\tUS\tX\n1.0.0.0 1.0.0.255 5\n", &mut db).unwrap_err();
        assert!(e.to_string().starts_with("t.tsv:2: expected start, end"), "{e}");
    }

    #[test]
    fn a_source_past_ten_times_the_full_table_is_refused() {
        // Each row is a range that cuts into 254 prefixes: the cap is reached
        // long before the file is read.
        let row = "::1,ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe,64500\n";
        let text = row.repeat(MAX_PREFIXES / 254 + 2);
        let e = parse_csv("big.csv", &text, &mut AsnDb::default()).unwrap_err();
        assert!(e.to_string().contains("more than 10,000,000 prefixes"), "{e}");
        let mut many = String::new();
        for n in 1..=MAX_SYSTEMS as u32 + 1 {
            many.push_str(&format!("10.0.0.0\t10.0.0.0\t{n}\n"));
        }
        let e = parse_tsv("many.tsv", &many, &mut AsnDb::default()).unwrap_err();
        assert!(e.to_string().contains(&format!("many.tsv:{}: more than 1,000,000 systems", MAX_SYSTEMS + 1)), "{e}");
    }

    #[test]
    fn tsv_iptoasn_layout() {
        let text = "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n\
                    1.0.1.0\t1.0.3.255\t0\tNone\tNot routed\n\
                    16778240\t16779263\t38803\tAU\tGTELECOM-AUSTRALIA Gtelecom Pty Ltd\n\
                    2001:200::\t2001:200:ffff:ffff:ffff:ffff:ffff:ffff\t2500\tJP\tWIDE-BB WIDE Project\n";
        let mut db = AsnDb::default();
        parse_tsv("ip2asn.tsv", text, &mut db).unwrap();
        db.normalize();
        assert_eq!(strs(&db, 13335), ["1.0.0.0/24"]);
        assert_eq!(strs(&db, 38803), ["1.0.4.0/22"]);
        assert_eq!(strs(&db, 2500), ["2001:200::/32"]);
        assert_eq!(db.systems[&Asn(2500)].org.as_deref(), Some("WIDE-BB WIDE Project"));
        assert_eq!(db.systems.len(), 3);
    }

    #[test]
    fn geolite2_asn_mmdb_layout() {
        use blocker_tests::mmdb::Writer;
        let mut w = Writer::new();
        w.insert_asn(u128::from(u32::from_be_bytes([192, 0, 2, 0])), 96 + 24, 64500, "Example, Inc.");
        w.insert_asn(0x2001_0db8u128 << 96, 32, 64501, "Six \"Net\"");
        let mut db = AsnDb::default();
        read_mmdb(&w.finish(), "asn.mmdb", &mut db).unwrap();
        assert_eq!(strs(&db, 64500), ["192.0.2.0/24"]);
        assert_eq!(db.systems[&Asn(64500)].org.as_deref(), Some("Example, Inc."));
        assert_eq!(strs(&db, 64501), ["2001:db8::/32"]);
        // A country database is not an ASN database.
        let mut w = Writer::new();
        w.insert(0x2001_0db8u128 << 96, 32, "AU", &blocker_tests::mmdb::Layout::GeoIp2);
        let e = read_mmdb(&w.finish(), "country.mmdb", &mut AsnDb::default()).unwrap_err();
        assert!(e.to_string().contains("not an ASN database"), "{e}");
    }
}
