//! The LAPI's decision stream (`GET /v1/decisions/stream`), read as a stream:
//! each decision of `new` and `deleted` is handed on as soon as it is read, so
//! an answer of millions of decisions never sits whole in memory. Every field
//! is read loosely: a decision with a missing or mistyped field is handed on
//! as such (and skipped by the caller), never failing the rest.

use std::{fmt, io::Read};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The most bytes of one field kept; a longer one is cut (and then refused
/// by whatever reads it: no scope, value or duration is that long).
const MAX_FIELD_BYTES: usize = 512;

/// The list a decision came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    New,
    Deleted,
}

/// One element of `new` or `deleted`, as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawDecision {
    pub id: Option<String>,
    pub scope: Option<String>,
    pub value: Option<String>,
    /// `type`: ban, captcha, ...
    pub kind: Option<String>,
    pub duration: Option<String>,
    pub origin: Option<String>,
    pub scenario: Option<String>,
    /// The element was not a JSON object.
    pub not_an_object: bool,
}

/// Why a stream could not be read to its end (what was handed on stays).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the answer is not a decision stream: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Sink(String),
}

/// Reads a stream answer from `reader`, handing each decision to `sink` in
/// the order of the answer. A `sink` error stops the read.
pub fn read<R: Read>(
    reader: R,
    sink: &mut dyn FnMut(List, RawDecision) -> Result<(), String>,
) -> Result<(), StreamError> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 16, reader));
    let mut failed = None;
    let result = de.deserialize_map(Answer { sink, failed: &mut failed });
    if let Some(why) = failed {
        return Err(StreamError::Sink(why));
    }
    result?;
    de.end()?;
    Ok(())
}

struct Answer<'s, 'f> {
    sink: &'s mut dyn FnMut(List, RawDecision) -> Result<(), String>,
    failed: &'f mut Option<String>,
}

impl<'de> Visitor<'de> for Answer<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with \"new\" and \"deleted\" lists")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Field>()? {
            let list = match key.0.as_str() {
                "new" => List::New,
                "deleted" => List::Deleted,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            map.next_value_seed(ListSeed { list, sink: &mut *self.sink, failed: &mut *self.failed })?;
        }
        Ok(())
    }
}

/// A key, bounded.
struct Field(String);

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Field(d.deserialize_str(Loose)?.unwrap_or_default()))
    }
}

struct ListSeed<'s, 'f> {
    list: List,
    sink: &'s mut dyn FnMut(List, RawDecision) -> Result<(), String>,
    failed: &'f mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // `null` is an empty list (the LAPI sends it so).
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of decisions or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(d) = seq.next_element::<RawDecision>()? {
            if let Err(why) = (self.sink)(self.list, d) {
                *self.failed = Some(why.clone());
                return Err(de::Error::custom(why));
            }
        }
        Ok(())
    }
}

impl<'de> de::Deserialize<'de> for RawDecision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DecisionVisitor)
    }
}

struct DecisionVisitor;

impl DecisionVisitor {
    fn not_an_object<E>() -> Result<RawDecision, E> {
        Ok(RawDecision { not_an_object: true, ..RawDecision::default() })
    }
}

impl<'de> Visitor<'de> for DecisionVisitor {
    type Value = RawDecision;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decision")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDecision, A::Error> {
        let mut d = RawDecision::default();
        while let Some(key) = map.next_key::<Field>()? {
            let slot = match key.0.as_str() {
                "id" => &mut d.id,
                "scope" => &mut d.scope,
                "value" => &mut d.value,
                "type" => &mut d.kind,
                "duration" => &mut d.duration,
                "origin" => &mut d.origin,
                "scenario" => &mut d.scenario,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value::<LooseValue>()?.0;
        }
        Ok(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDecision, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Self::not_an_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawDecision, E> {
        Self::not_an_object()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawDecision, E> {
        Self::not_an_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawDecision, E> {
        Self::not_an_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawDecision, E> {
        Self::not_an_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawDecision, E> {
        Self::not_an_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawDecision, E> {
        Self::not_an_object()
    }
}

/// A field's value as text: strings (cut at `MAX_FIELD_BYTES`) and numbers;
/// anything else is None.
struct LooseValue(Option<String>);

impl<'de> de::Deserialize<'de> for LooseValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(LooseValue(d.deserialize_any(Loose)?))
    }
}

struct Loose;

fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl<'de> Visitor<'de> for Loose {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<String>, E> {
        Ok(Some(cut(s)))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<String>, E> {
        Ok(Some(n.to_string()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<String>, E> {
        Ok(Some(n.to_string()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Option<String>, E> {
        Ok(Some(n.to_string()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(Loose)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Reads a Go duration (`time.Duration.String()`, as the LAPI writes them:
/// "3h59m58.5s", "-1.2s", "300ms", "0s") as signed nanoseconds; None if it is
/// not one or does not fit.
pub fn go_duration_ns(text: &str) -> Option<i128> {
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let (negative, mut rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(end)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let per: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = whole.checked_mul(per)?;
        // The fraction, to the nanosecond (further digits are dropped).
        let mut scale = per;
        for d in frac.bytes().take(20) {
            scale /= 10;
            part += i128::from(d - b'0') * scale;
        }
        total = total.checked_add(part)?;
        rest = next;
    }
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Result<Vec<(List, RawDecision)>, StreamError> {
        let mut out = Vec::new();
        read(text.as_bytes(), &mut |l, d| {
            out.push((l, d));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn reads_what_the_lapi_sends() {
        let got = all(r#"{"deleted":null,"new":[{"duration":"29m59.63890697s","id":2,"origin":"cscli","scenario":"manual 'ban' from 'local'","scope":"Range","type":"ban","value":"198.51.100.0/24","extra":{"a":[1]}}]}"#).unwrap();
        assert_eq!(got.len(), 1);
        let (list, d) = &got[0];
        assert_eq!(*list, List::New);
        assert_eq!(d.id.as_deref(), Some("2"));
        assert_eq!(d.scope.as_deref(), Some("Range"));
        assert_eq!(d.value.as_deref(), Some("198.51.100.0/24"));
        assert_eq!(d.kind.as_deref(), Some("ban"));
        assert_eq!(d.duration.as_deref(), Some("29m59.63890697s"));
        assert!(all(r#"{"new":null,"deleted":null}"#).unwrap().is_empty());
        assert!(all(r#"{}"#).unwrap().is_empty());
    }

    #[test]
    fn a_bad_decision_is_handed_on_as_such() {
        let got = all(r#"{"new":[7,{"id":"x","value":{"nested":true}},{"id":3,"value":"192.0.2.1"}],"deleted":[[1]]}"#)
            .unwrap();
        assert_eq!(got.len(), 4);
        assert!(got[0].1.not_an_object);
        assert_eq!(got[1].1.value, None);
        assert_eq!(got[2].1.id.as_deref(), Some("3"));
        assert_eq!(got[3].0, List::Deleted);
        assert!(got[3].1.not_an_object);
        // Field values are bounded.
        let long = format!(r#"{{"new":[{{"value":"{}"}}]}}"#, "a".repeat(10_000));
        assert_eq!(all(&long).unwrap()[0].1.value.as_ref().unwrap().len(), MAX_FIELD_BYTES);
    }

    #[test]
    fn a_broken_answer_is_an_error_after_what_was_read() {
        let mut seen = 0;
        let e = read(r#"{"new":[{"id":1},{"id":2}"#.as_bytes(), &mut |_, _| {
            seen += 1;
            Ok(())
        });
        assert!(e.is_err());
        assert_eq!(seen, 2);
        assert!(all("[]").is_err());
        assert!(all(r#"{"new":[]} trailing"#).is_err());
        let e = read(r#"{"new":[{"id":1},{"id":2}]}"#.as_bytes(), &mut |_, _| Err("stop".into())).unwrap_err();
        assert_eq!(e.to_string(), "stop");
    }

    #[test]
    fn go_durations() {
        let s = 1_000_000_000i128;
        assert_eq!(go_duration_ns("29m59.63890697s"), Some(29 * 60 * s + 59 * s + 638_906_970));
        assert_eq!(go_duration_ns("3h59m58s"), Some((3 * 3600 + 59 * 60 + 58) * s));
        assert_eq!(go_duration_ns("-1.5s"), Some(-1_500_000_000));
        assert_eq!(go_duration_ns("300ms"), Some(300_000_000));
        assert_eq!(go_duration_ns("2µs"), Some(2_000));
        assert_eq!(go_duration_ns("0"), Some(0));
        assert_eq!(go_duration_ns("1.5h"), Some(5400 * s));
        for bad in ["", "s", "1", "1x", "h1", "1..5s", "-", "1e9s", &"9".repeat(70)] {
            assert_eq!(go_duration_ns(bad), None, "{bad}");
        }
    }
}
