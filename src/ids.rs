//! Resource ids exactly as the agent server reads them.
//!
//! The agent server turns every thread, run, cron and assistant id it receives into a UUID with
//! Python's `uuid.UUID(text)`, which accepts far more than the canonical spelling: braces, a
//! `urn:uuid:` prefix anywhere, hyphens anywhere, 32 bare hex digits, any case, surrounding
//! whitespace, a `+` sign, a `0x` prefix, underscores between digits and non-ASCII decimal
//! digits. Two spellings of one id name one resource on the server, so the gateway must
//! recognise every one of them, or an id it takes for "not an id" (or for another id) would be
//! authorized as something other than what the server touches.
//!
//! [`py_uuid`] reads a string exactly as CPython 3.11's `uuid.UUID(hex=...)` does (the test
//! suite checks it against Python itself). [`read`] sorts a string into the three cases the
//! gateway acts on: the canonical spelling (lower-case, hyphenated, what the SDKs send), another
//! spelling of a UUID (refused with 422, so that what is authorized is byte for byte what the
//! server touches), or not a UUID at all.

use uuid::Uuid;

/// How the agent server reads a string given as an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    /// The canonical spelling: 36 characters, lower-case hex, hyphens at 8, 13, 18 and 23.
    Canonical(Uuid),
    /// A UUID to the server, spelled some other way; the canonical text is `Uuid::to_string`.
    Variant(Uuid),
    /// Not a UUID to the server (an invalid id, or for assistants a graph name).
    NotUuid,
}

/// Sort `s` into canonical, variant or not-a-UUID (see the module doc).
pub fn read(s: &str) -> IdForm {
    if let Some(u) = canonical(s) {
        return IdForm::Canonical(u);
    }
    match py_uuid(s) {
        Some(u) => IdForm::Variant(u),
        None => IdForm::NotUuid,
    }
}

/// Whether `s` is a UUID in canonical spelling.
pub fn is_canonical(s: &str) -> bool {
    canonical(s).is_some()
}

/// The UUID of a canonical spelling, without allocating (the common case on every request).
fn canonical(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(d);
    }
    Some(Uuid::from_u128(value))
}

/// `uuid.UUID(s)` as CPython 3.11 computes it, or `None` where it raises `ValueError`:
///
/// ```python
/// hex = hex.replace('urn:', '').replace('uuid:', '')
/// hex = hex.strip('{}').replace('-', '')
/// if len(hex) != 32: raise ValueError('badly formed hexadecimal UUID string')
/// int = int_(hex, 16)
/// ```
///
/// `int(text, 16)` is emulated in `py_int16`.
pub fn py_uuid(s: &str) -> Option<Uuid> {
    let s = s.replace("urn:", "").replace("uuid:", "");
    let s = s.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    if s.chars().count() != 32 {
        return None;
    }
    py_int16(&s).map(Uuid::from_u128)
}

/// `int(text, 16)` for a text whose value fits 128 bits (at most 32 characters), as CPython's
/// `PyLong_FromUnicodeObject` reads it: ASCII stays as it is, non-ASCII white space becomes a
/// space and non-ASCII decimal digits their ASCII digit, any other non-ASCII character is an
/// error; then optional ASCII white space (not U+001C to U+001F, which `str.isspace` counts), an optional sign, an optional `0x` prefix (one underscore may follow it), hex digits
/// with single underscores between them, and optional white space.
fn py_int16(text: &str) -> Option<u128> {
    let mut ascii = Vec::with_capacity(text.len());
    for c in text.chars() {
        let b = if c.is_ascii() {
            c as u8
        } else if c.is_whitespace() {
            b' '
        } else if let Some(d) = decimal_value(c) {
            b'0' + d
        } else {
            return None;
        };
        ascii.push(b);
    }
    let mut s: &[u8] = &ascii;
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    let mut negative = false;
    if let [sign @ (b'+' | b'-'), rest @ ..] = s {
        negative = *sign == b'-';
        s = rest;
    }
    if let [b'0', b'x' | b'X', rest @ ..] = s {
        s = rest;
        if let [b'_', rest @ ..] = s {
            s = rest;
        }
    }
    if s.first() == Some(&b'_') {
        return None;
    }
    let mut value: u128 = 0;
    let mut digits = 0usize;
    let mut prev_underscore = false;
    while let [c, rest @ ..] = s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b'_' if !prev_underscore && digits > 0 => {
                prev_underscore = true;
                s = rest;
                continue;
            }
            _ => break,
        };
        value = value.checked_mul(16)?.checked_add(u128::from(d))?;
        digits += 1;
        prev_underscore = false;
        s = rest;
    }
    if digits == 0 || prev_underscore {
        return None;
    }
    if !s.iter().copied().all(is_space) {
        return None;
    }
    // `uuid.UUID` refuses negative values; `-0` is zero.
    if negative && value != 0 {
        return None;
    }
    Some(value)
}

/// CPython's `Py_ISSPACE`: the ASCII white space `int()` skips around its digits.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The first code point of each run of ten Unicode decimal digits (`Nd`, Unicode 14.0, the
/// version CPython 3.11 uses): `unicodedata.decimal(c) == 0`. Every run is `0` to `9` in order.
const DECIMAL_RUNS: [u32; 66] = [
    0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66,
    0xde6, 0xe50, 0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90,
    0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10,
    0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0, 0x11650,
    0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60, 0x16ac0, 0x16b50,
    0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
];

/// `unicodedata.decimal(c)`, or `None` for a character that is not a decimal digit.
fn decimal_value(c: char) -> Option<u8> {
    let cp = u32::from(c);
    let i = DECIMAL_RUNS.partition_point(|&start| start <= cp);
    let start = *DECIMAL_RUNS.get(i.checked_sub(1)?)?;
    u8::try_from(cp - start).ok().filter(|d| *d < 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e";

    fn id() -> Uuid {
        Uuid::parse_str(ID).unwrap()
    }

    #[test]
    fn canonical_spelling_is_canonical() {
        assert_eq!(read(ID), IdForm::Canonical(id()));
        assert!(is_canonical(ID));
        assert_eq!(id().to_string(), ID);
    }

    #[test]
    fn spellings_python_accepts_are_variants_of_the_same_id() {
        let hex = ID.replace('-', "");
        for v in [
            format!("{{{ID}}}"),
            format!("urn:uuid:{ID}"),
            format!("uuid:{ID}"),
            ID.to_uppercase(),
            hex.clone(),
            format!("{{{{}}{hex}}}}}"),
            format!("-{ID}-"),
            format!("6f1d-1a52{}", &hex[8..]),
            format!("6f1durn:{}", &hex[4..]),
            format!(" {}", &hex[1..]),
            format!("{}\u{3000}", &hex[1..]),
            format!("+{}", &hex[1..]),
            format!("0x{}", &hex[2..]),
            format!("0X_{}", &hex[3..]),
            format!("{}_{}", &hex[..8], &hex[9..]),
            format!("\u{0666}{}", &hex[1..]),
        ] {
            let u = py_uuid(&v).unwrap_or_else(|| panic!("{v:?} is a UUID to Python"));
            assert_eq!(read(&v), IdForm::Variant(u), "{v:?}");
        }
        assert_eq!(py_uuid(&format!("{{{ID}}}")), Some(id()));
        assert_eq!(py_uuid(&ID.to_uppercase()), Some(id()));
        assert_eq!(py_uuid(&format!("urn:uuid:{ID}")), Some(id()));
    }

    #[test]
    fn strings_python_refuses_are_not_uuids() {
        let hex = ID.replace('-', "");
        for v in [
            String::new(),
            "agent".to_string(),
            format!("{ID}0"),
            format!("{}g", &hex[1..]),
            format!("_{}", &hex[1..]),
            format!("{}_", &hex[1..]),
            format!("{}__{}", &hex[..8], &hex[10..]),
            format!("0x{}", &hex[..29]),
            format!("{{ {ID} }}"),
            format!("\u{ff21}{}", &hex[1..]),
            format!("++{}", &hex[2..]),
            format!("+ {}", &hex[2..]),
            format!("0x__{}", &hex[4..]),
            format!("{} {}", &hex[..8], &hex[9..]),
        ] {
            assert_eq!(py_uuid(&v), None, "{v:?}");
            assert_eq!(read(&v), IdForm::NotUuid, "{v:?}");
        }
    }

    #[test]
    fn decimal_digits_follow_unicode() {
        assert_eq!(decimal_value('7'), Some(7));
        assert_eq!(decimal_value('\u{0669}'), Some(9));
        assert_eq!(decimal_value('\u{ff10}'), Some(0));
        assert_eq!(decimal_value('\u{1fbf9}'), Some(9));
        assert_eq!(decimal_value('a'), None);
        assert_eq!(decimal_value('\u{2155}'), None);
        assert_eq!(decimal_value('\u{1fbfa}'), None);
    }
}
