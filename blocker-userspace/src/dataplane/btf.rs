//! The object's BTF as the kernel accepts it.
//!
//! bpf-linker 0.10 writes Rust type names into BTF; it rewrites those of structs
//! (`Global<u8>` becomes `Global_3C_u8_3E_`) but not those of unions, and the
//! kernel refuses a BTF whose union is named `MaybeUninit<u8>` (aya-log's
//! level). aya then loads the object without BTF, which is fine for legacy maps
//! but not for the classifier's arrays of maps: their inner map's definition is
//! read from BTF and created with its type ids. So every type name the kernel
//! wants to be a C identifier has its other characters replaced by `_`, in
//! place (the string table keeps its offsets), before aya parses the object.

use std::borrow::Cow;

/// BTF kinds (`include/uapi/linux/btf.h`) and the bytes after each type's
/// 12-byte header: fixed, or per member (`vlen` of them).
fn trailing_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 => 4,                                      // INT
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                                     // ARRAY
        4 | 5 => 12 * vlen,                          // STRUCT, UNION
        6 => 8 * vlen,                               // ENUM
        13 => 8 * vlen,                              // FUNC_PROTO
        14 | 17 => 4,                                // VAR, DECL_TAG
        15 => 12 * vlen,                             // DATASEC
        19 => 12 * vlen,                             // ENUM64
        _ => return None,
    })
}

/// Kinds whose name the kernel checks as an identifier.
fn named_as_identifier(kind: u32) -> bool {
    matches!(kind, 4 | 5 | 6 | 7 | 8 | 12 | 14 | 19)
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(d.get(at..at.checked_add(8)?)?.try_into().ok()?)).ok()
}

/// `object` with its BTF type names made identifiers; borrowed unchanged when
/// there is nothing to change or the object is not what this expects.
pub(super) fn with_identifier_names(object: &[u8]) -> Cow<'_, [u8]> {
    let Some((strings, names)) = names_to_fix(object) else { return Cow::Borrowed(object) };
    if names.is_empty() {
        return Cow::Borrowed(object);
    }
    let mut out = object.to_vec();
    for name in names {
        let start = strings + name;
        let end = out[start..].iter().position(|&b| b == 0).map_or(out.len(), |n| start + n);
        for (i, b) in out[start..end].iter_mut().enumerate() {
            let keep = b.is_ascii_alphabetic() || *b == b'_' || (i > 0 && b.is_ascii_digit());
            if !keep {
                *b = b'_';
            }
        }
    }
    Cow::Owned(out)
}

/// The start of the `.BTF` string table in `object` and the offsets in it of
/// the names to fix (None: not an ELF64 object with a readable `.BTF`).
fn names_to_fix(d: &[u8]) -> Option<(usize, Vec<usize>)> {
    if d.get(..4)? != b"\x7fELF" || *d.get(4)? != 2 || *d.get(5)? != 1 {
        return None; // ELF64, little-endian only
    }
    let shoff = u64_at(d, 0x28)?;
    let (shentsize, shnum, shstrndx) =
        (usize::from(u16_at(d, 0x3a)?), usize::from(u16_at(d, 0x3c)?), usize::from(u16_at(d, 0x3e)?));
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(d, at)?, u64_at(d, at + 0x18)?, u64_at(d, at + 0x20)?))
    };
    let (_, shstr, _) = section(shstrndx)?;
    let name_of = |n: u32| -> Option<&[u8]> {
        let start = shstr.checked_add(n as usize)?;
        let rest = d.get(start..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    };
    let (_, btf, btf_size) = (0..shnum).filter_map(section).find(|&(n, ..)| name_of(n) == Some(b".BTF"))?;
    let hdr_len = u32_at(d, btf + 4)? as usize;
    let (type_off, type_len) = (u32_at(d, btf + 8)? as usize, u32_at(d, btf + 12)? as usize);
    let (str_off, str_len) = (u32_at(d, btf + 16)? as usize, u32_at(d, btf + 20)? as usize);
    let types = btf.checked_add(hdr_len)?.checked_add(type_off)?;
    let strings = btf.checked_add(hdr_len)?.checked_add(str_off)?;
    if hdr_len.checked_add(str_off)?.checked_add(str_len)? > btf_size || strings.checked_add(str_len)? > d.len() {
        return None;
    }
    let valid = |name: u32| -> Option<bool> {
        let start = strings.checked_add(name as usize)?;
        let rest = d.get(start..strings + str_len)?;
        let s = &rest[..rest.iter().position(|&b| b == 0)?];
        Some(s.is_empty() || (!s[0].is_ascii_digit() && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')))
    };
    let mut fix = Vec::new();
    let mut at = types;
    let end = types.checked_add(type_len)?;
    while at < end {
        let (name, info) = (u32_at(d, at)?, u32_at(d, at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if named_as_identifier(kind) && !valid(name)? {
            fix.push(name as usize);
        }
        if matches!(kind, 4 | 5) {
            for m in 0..vlen {
                let member = u32_at(d, at + 12 + 12 * m)?;
                if !valid(member)? {
                    fix.push(member as usize);
                }
            }
        }
        at = at.checked_add(12 + trailing_bytes(kind, vlen)?)?;
    }
    Some((strings, fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_object_gets_identifier_names_and_keeps_its_size() {
        let object = super::super::object::EBPF_OBJECT;
        let fixed = with_identifier_names(object);
        assert_eq!(fixed.len(), object.len());
        let (_, left) = names_to_fix(&fixed).expect("the object has a readable .BTF");
        assert!(left.is_empty(), "names still to fix: {left:?}");
    }

    #[test]
    fn anything_else_is_left_alone() {
        for bytes in [&b""[..], b"\x7fELF", b"not an object at all"] {
            assert!(matches!(with_identifier_names(bytes), Cow::Borrowed(_)));
        }
    }
}
