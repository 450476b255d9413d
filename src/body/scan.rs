//! One validating pass over a JSON text that also records the byte spans of the top-level
//! object's members.
//!
//! The grammar is RFC 8259's, as serde_json accepts it: whitespace is space, tab, CR and LF;
//! strings reject unescaped control characters and accept `\uXXXX` escapes without pairing
//! surrogates (as serde_json does when it skips a value); numbers have no range limit. The
//! input must already be valid UTF-8 (the caller checks the whole text once, which is
//! cheaper than checking per string). Nothing here recurses: nesting is an explicit stack, so
//! `max_depth` is exact and deep input cannot overflow the thread's stack.
//!
//! String interiors, the bulk of a typical body, are not walked byte by byte: [`Stops`]
//! first classifies the whole text, 64 bytes at a time with four 16-byte SIMD compares
//! (`wide`), into bit masks of the bytes a string can stop at (a quote, a backslash, a control
//! character); a string then jumps from one set bit to the next. Everything outside strings
//! is walked byte by byte.

use wide::u8x16;

/// Byte spans of one member of the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// Offset of the key's opening quote.
    pub key_start: usize,
    /// Offset one past the key's closing quote.
    pub key_end: usize,
    /// Whether the key has an escape sequence (else its text is the bytes between the quotes).
    pub key_escaped: bool,
    /// Offset of the first byte of the value.
    pub value_start: usize,
    /// Offset one past the last byte of the value.
    pub value_end: usize,
}

/// What the text is, once known to be valid.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scanned {
    /// An object: the offset of its `{` and its members in source order.
    Object { open: usize, members: Vec<Span> },
    /// Any other JSON value.
    Other,
}

/// Why the text is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ScanError {
    /// Objects and arrays nest deeper than allowed.
    TooDeep,
    /// Not JSON: what was wrong and the byte offset where it was found.
    Syntax(&'static str, usize),
}

impl ScanError {
    /// The message with a 1-based line and column, as JSON parsers report them.
    pub(super) fn describe(&self, src: &[u8]) -> String {
        match self {
            ScanError::TooDeep => "nesting too deep".to_owned(),
            ScanError::Syntax(what, at) => {
                let before = src.get(..*at).unwrap_or(src);
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let column = at
                    - before
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1)
                    + 1;
                format!("{what} at line {line} column {column}")
            }
        }
    }
}

/// Validate `src` as exactly one JSON value (surrounding whitespace allowed) with containers
/// nested at most `max_depth` deep, and index the members if it is an object.
pub(super) fn scan(src: &[u8], max_depth: usize) -> Result<Scanned, ScanError> {
    let mut i = skip_ws(src, 0);
    let open = i;
    let top_object = src.get(i) == Some(&b'{');
    let mut members = Vec::with_capacity(16);
    // Open containers, innermost last: true for an object, false for an array.
    let mut stack = Stack::default();
    // Whether the innermost open container is an object, and whether it is the top-level
    // object whose members are recorded (kept in step with `stack`, read once per value).
    let mut in_object = false;
    let mut at_top = false;
    // Key span and value start of the top-level member whose value is being scanned.
    let mut pending: Option<Span> = None;
    let (mut inline, mut heap) = ([0u64; 8], Vec::new());
    let stops = Stops::new(src, &mut inline, &mut heap);
    'value: loop {
        // A value starts at `i`.
        let mut end = match src.get(i) {
            Some(b'"') => string(src, i, &stops)?,
            Some(&open_byte @ (b'{' | b'[')) => {
                if stack.len() >= max_depth {
                    return Err(ScanError::TooDeep);
                }
                in_object = open_byte == b'{';
                stack.push(in_object);
                at_top = top_object && stack.len() == 1;
                i = skip_ws(src, i + 1);
                let close = if in_object { b'}' } else { b']' };
                if src.get(i) != Some(&close) {
                    if in_object {
                        i = member_key(src, i, at_top, &mut pending, &stops)?;
                    }
                    continue 'value;
                }
                stack.pop();
                in_object = stack.last().unwrap_or(false);
                at_top = top_object && stack.len() == 1;
                i + 1
            }
            Some(b't') => literal(src, i, b"true")?,
            Some(b'f') => literal(src, i, b"false")?,
            Some(b'n') => literal(src, i, b"null")?,
            Some(b'-' | b'0'..=b'9') => number(src, i)?,
            Some(_) => return Err(ScanError::Syntax("expected value", i)),
            None => return Err(ScanError::Syntax("EOF while parsing a value", i)),
        };
        // A value ended at `end`: close containers until one continues.
        loop {
            if at_top {
                if let Some(span) = pending.take() {
                    members.push(Span {
                        value_end: end,
                        ..span
                    });
                }
            }
            i = skip_ws(src, end);
            if stack.len() == 0 {
                if i != src.len() {
                    return Err(ScanError::Syntax("trailing characters", i));
                }
                return Ok(if top_object {
                    Scanned::Object { open, members }
                } else {
                    Scanned::Other
                });
            }
            match src.get(i) {
                Some(b',') => {
                    i = skip_ws(src, i + 1);
                    if in_object {
                        i = member_key(src, i, at_top, &mut pending, &stops)?;
                    }
                    continue 'value;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                None => return Err(ScanError::Syntax("EOF while parsing", i)),
                Some(_) if in_object => return Err(ScanError::Syntax("expected `,` or `}`", i)),
                Some(_) => return Err(ScanError::Syntax("expected `,` or `]`", i)),
            }
            stack.pop();
            in_object = stack.last().unwrap_or(false);
            at_top = top_object && stack.len() == 1;
            end = i + 1;
        }
    }
}

/// The open containers (true: object), without a heap allocation up to 128 levels.
#[derive(Default)]
struct Stack {
    len: usize,
    inline: u128,
    deeper: Vec<bool>,
}

impl Stack {
    fn len(&self) -> usize {
        self.len
    }
    fn push(&mut self, is_object: bool) {
        if self.len < 128 {
            let bit = 1u128 << self.len;
            if is_object {
                self.inline |= bit;
            } else {
                self.inline &= !bit;
            }
        } else {
            self.deeper.push(is_object);
        }
        self.len += 1;
    }
    fn pop(&mut self) {
        if self.len > 128 {
            self.deeper.pop();
        }
        self.len = self.len.saturating_sub(1);
    }
    fn last(&self) -> Option<bool> {
        match self.len {
            0 => None,
            n if n <= 128 => Some(self.inline & (1u128 << (n - 1)) != 0),
            _ => self.deeper.last().copied(),
        }
    }
}

/// A member's key and colon at `i`; returns where its value starts. Records the spans in
/// `pending` when `top` (a member of the top-level object).
#[inline(always)]
fn member_key(
    src: &[u8],
    i: usize,
    top: bool,
    pending: &mut Option<Span>,
    stops: &Stops<'_>,
) -> Result<usize, ScanError> {
    if src.get(i) != Some(&b'"') {
        return Err(ScanError::Syntax("key must be a string", i));
    }
    let (key_end, key_escaped) = string_escaped(src, i, stops)?;
    let colon = skip_ws(src, key_end);
    if src.get(colon) != Some(&b':') {
        return Err(ScanError::Syntax("expected `:`", colon));
    }
    let value_start = skip_ws(src, colon + 1);
    if top {
        *pending = Some(Span {
            key_start: i,
            key_end,
            key_escaped,
            value_start,
            value_end: value_start,
        });
    }
    Ok(value_start)
}

/// The end of the string whose opening quote is at `i`.
#[inline(always)]
fn string(src: &[u8], i: usize, stops: &Stops<'_>) -> Result<usize, ScanError> {
    string_escaped(src, i, stops).map(|(end, _)| end)
}

/// The end of the string whose opening quote is at `i`, and whether it has an escape (any
/// stop before its closing quote). Inlined: most strings end at their first stop.
#[inline(always)]
fn string_escaped(src: &[u8], i: usize, stops: &Stops<'_>) -> Result<(usize, bool), ScanError> {
    let j = stops.next(i + 1);
    if src.get(j) == Some(&b'"') {
        return Ok((j + 1, false));
    }
    Ok((string_from(src, j, stops)?, true))
}

/// The rest of a string from the stop at `j` that is not its closing quote.
#[inline(never)]
fn string_from(src: &[u8], mut j: usize, stops: &Stops<'_>) -> Result<usize, ScanError> {
    loop {
        match src.get(j) {
            Some(b'"') => return Ok(j + 1),
            Some(b'\\') => {
                j = stops.next(escape(src, j)?);
            }
            Some(&b) if b < 0x20 => {
                return Err(ScanError::Syntax(
                    "control character (\\u0000-\\u001F) found while parsing a string",
                    j,
                ))
            }
            // Not a stop: cannot happen, but stepping over it is still correct.
            Some(_) => j = stops.next(j + 1),
            None => return Err(ScanError::Syntax("EOF while parsing a string", j)),
        }
    }
}

/// Where string interiors stop: the bytes that are a quote, a backslash or below 0x20, as one
/// bit mask per 64-byte block of the text, all classified up front in one tight loop (an
/// eighth of the text's size in memory; on the stack for texts up to 512 bytes).
struct Stops<'a> {
    /// Bit `k` of `masks[b]` set: byte `64 * b + k` is a stop.
    masks: &'a [u64],
    len: usize,
}

impl<'a> Stops<'a> {
    fn new(src: &[u8], inline: &'a mut [u64; 8], heap: &'a mut Vec<u64>) -> Self {
        let (blocks, tail) = src.as_chunks::<64>();
        // Bytes past the end count as spaces: no stop.
        let tail = (!tail.is_empty()).then(|| {
            let mut padded = [b' '; 64];
            if let Some(head) = padded.get_mut(..tail.len()) {
                head.copy_from_slice(tail);
            }
            classify(&padded)
        });
        let count = blocks.len() + usize::from(tail.is_some());
        let masks: &[u64] = if count <= inline.len() {
            let masks = &mut inline[..count];
            for (mask, block) in masks.iter_mut().zip(blocks) {
                *mask = classify(block);
            }
            if let (Some(last), Some(tail)) = (masks.last_mut(), tail) {
                *last = tail;
            }
            masks
        } else {
            heap.reserve_exact(count);
            heap.extend(blocks.iter().map(classify));
            heap.extend(tail);
            heap
        };
        Stops {
            masks,
            len: src.len(),
        }
    }

    /// The first stop at or after `from`, or the text's length if there is none.
    #[inline(always)]
    fn next(&self, from: usize) -> usize {
        let mut block = from / 64;
        let Some(&first) = self.masks.get(block) else {
            return self.len;
        };
        let mut mask = first & (u64::MAX << (from % 64));
        while mask == 0 {
            block += 1;
            match self.masks.get(block) {
                Some(&next) => mask = next,
                None => return self.len,
            }
        }
        block * 64 + mask.trailing_zeros() as usize
    }
}

/// The stop mask of one 64-byte block: four 16-byte SIMD compares.
#[inline(always)]
fn classify(block: &[u8; 64]) -> u64 {
    let quote = u8x16::splat(b'"');
    let backslash = u8x16::splat(b'\\');
    let below_space = u8x16::splat(0x1f);
    let (lanes, _) = block.as_chunks::<16>();
    let mut mask = 0u64;
    for (k, lane) in lanes.iter().enumerate() {
        let v = u8x16::new(*lane);
        let stop = v.simd_eq(quote) | v.simd_eq(backslash) | v.min(below_space).simd_eq(v);
        mask |= u64::from(stop.to_bitmask()) << (16 * k);
    }
    mask
}

/// The end of the escape sequence whose backslash is at `i`.
fn escape(src: &[u8], i: usize) -> Result<usize, ScanError> {
    match src.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => {
            let hex = src.get(i + 2..i + 6);
            if hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                Ok(i + 6)
            } else {
                Err(ScanError::Syntax("invalid \\u escape", i))
            }
        }
        Some(_) => Err(ScanError::Syntax("invalid escape", i)),
        None => Err(ScanError::Syntax("EOF while parsing a string", i + 1)),
    }
}

fn literal(src: &[u8], i: usize, word: &'static [u8]) -> Result<usize, ScanError> {
    if src.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        Err(ScanError::Syntax("expected value", i))
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at `i`; no range limit.
fn number(src: &[u8], mut i: usize) -> Result<usize, ScanError> {
    let digits = |mut j: usize| {
        while src.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    if src.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match src.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i + 1),
        _ => return Err(ScanError::Syntax("invalid number", i)),
    };
    if src.get(i) == Some(&b'.') {
        let after = digits(i + 1);
        if after == i + 1 {
            return Err(ScanError::Syntax("invalid number", after));
        }
        i = after;
    }
    if matches!(src.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(src.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let after = digits(i);
        if after == i {
            return Err(ScanError::Syntax("invalid number", after));
        }
        i = after;
    }
    Ok(i)
}

#[inline(always)]
fn skip_ws(src: &[u8], mut i: usize) -> usize {
    while matches!(src.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{Deserialize, IgnoredAny};

    fn serde_accepts(src: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(src) else {
            return false;
        };
        let mut de = serde_json::Deserializer::from_str(text);
        IgnoredAny::deserialize(&mut de).is_ok() && de.end().is_ok()
    }

    fn accepts(src: &[u8]) -> bool {
        std::str::from_utf8(src).is_ok() && scan(src, 100).is_ok()
    }

    #[test]
    fn grammar_agrees_with_serde_json_on_edge_cases() {
        let cases: &[&str] = &[
            "{}",
            "[]",
            " {} ",
            "{\"a\":1}",
            "{\"a\" : [1, 2.5, -0, 1e5, 1E+5, 1e-5, -1.0e10]}",
            "0",
            "-0",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "1.5e3x",
            "--1",
            "-a",
            "true",
            "tru",
            "truex",
            "nul",
            "null",
            "false",
            "[true,false,null]",
            "\"\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "\"\\u00g9\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"\\",
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"é\"",
            "{\"a\":1,}",
            "[1,]",
            "[,1]",
            "{,}",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:1}",
            "{\"a\":1 \"b\":2}",
            "[1 2]",
            "[1}",
            "{\"a\":1]",
            "{} {}",
            "{}x",
            "",
            " ",
            "[[[]]]",
            "[{\"a\":[{}]}]",
            "{\"a\":\"\\/\\b\\f\\n\\r\\t\"}",
            "\u{c}{}",
            "{\"a\":1}\u{a0}",
            "123456789012345678901234567890e999999",
            "[1.0e+00000000000]",
            "\"abcdefgh\\\"ijklmnop\"",
            "\"abcdefghijklmnop",
            "\"abcdefghijklmnop\u{1f}q\"",
            "{\"k\":\"v\"}\n\r\t ",
        ];
        for c in cases {
            assert_eq!(accepts(c.as_bytes()), serde_accepts(c.as_bytes()), "{c:?}");
        }
    }

    #[test]
    fn spans_of_top_level_members() {
        let src = b" { \"a\" : 1 , \"b\":{\"x\":[1,{}]},\"c\" :\"s\\\"}\" } ";
        let Ok(Scanned::Object { open, members }) = scan(src, 10) else {
            panic!("not an object");
        };
        assert_eq!(open, 1);
        let text = |a: usize, b: usize| std::str::from_utf8(&src[a..b]).unwrap_or_default();
        let got: Vec<(&str, &str)> = members
            .iter()
            .map(|m| {
                (
                    text(m.key_start, m.key_end),
                    text(m.value_start, m.value_end),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("\"a\"", "1"),
                ("\"b\"", "{\"x\":[1,{}]}"),
                ("\"c\"", "\"s\\\"}\"")
            ]
        );
    }

    #[test]
    fn depth_is_exact() {
        assert!(scan(b"[[[]]]", 3).is_ok());
        assert_eq!(scan(b"[[[[]]]]", 3), Err(ScanError::TooDeep));
        assert!(scan(b"{\"a\":{\"b\":1}}", 2).is_ok());
        assert_eq!(scan(b"{\"a\":{\"b\":[]}}", 2), Err(ScanError::TooDeep));
        assert_eq!(scan(b"1", 0), Ok(Scanned::Other));
    }

    #[test]
    fn error_positions_are_lines_and_columns() {
        let src = b"{\n  \"a\": tru\n}";
        let Err(e) = scan(src, 10) else {
            panic!("accepted");
        };
        assert_eq!(e.describe(src), "expected value at line 2 column 8");
    }

    /// Strings that start, stop, escape or break at every offset around the 64-byte blocks
    /// the stop masks are computed in, including the text's last partial block.
    #[test]
    fn block_edges_agree_with_serde_json() {
        let specials: &[&[u8]] = &[
            b"\\\"",
            b"\\\\",
            b"\\u00e9",
            b"\\u00",
            b"\x01",
            b"\t",
            "\u{e9}".as_bytes(),
            b"\"",
            b"\\",
        ];
        for lead in 0..70 {
            for before in [0usize, 1, 7, 15, 16, 17, 31, 48, 63, 64, 65, 130] {
                for special in specials {
                    for after in [0usize, 1, 16, 63] {
                        let mut doc = vec![b'['];
                        doc.extend(std::iter::repeat_n(b' ', lead));
                        doc.push(b'"');
                        doc.extend(std::iter::repeat_n(b'x', before));
                        doc.extend_from_slice(special);
                        doc.extend(std::iter::repeat_n(b'y', after));
                        for tail in [&b"\"]"[..], b"\"", b""] {
                            let mut d = doc.clone();
                            d.extend_from_slice(tail);
                            assert_eq!(
                                accepts(&d),
                                serde_accepts(&d),
                                "{:?}",
                                String::from_utf8_lossy(&d)
                            );
                        }
                    }
                }
            }
        }
    }

    /// Mutations of valid documents (byte flips, deletions, insertions of JSON's special
    /// bytes): the scanner accepts exactly what serde_json accepts.
    #[test]
    fn property_mutations_agree_with_serde_json() {
        let seeds: &[&[u8]] = &[
            b"{\"metadata\":{\"owner\":\"a\\u00e9\",\"n\":[1,-2.5e3,true,null]},\"x\":\"\\\"\"}",
            b"[{\"a\":{}},[],\"\",0,-0.1E-2,false]",
            b"{\"long\":\"abcdefghijklmnopqrstuvwxyz0123456789\\n\\t\\\\ end\",\"k\":{\"k\":{}}}",
        ];
        let specials = b"{}[]\",:\\ 0-.eE+tfnu\x01\x7f";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize];
            let mut doc = seed.to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() % (doc.len() as u64 + 1)) as usize;
                let byte = specials[(next() % specials.len() as u64) as usize];
                match next() % 3 {
                    0 if at < doc.len() => doc[at] = byte,
                    1 if at < doc.len() => {
                        doc.remove(at);
                    }
                    _ => doc.insert(at, byte),
                }
            }
            assert_eq!(
                accepts(&doc),
                serde_accepts(&doc),
                "{:?}",
                String::from_utf8_lossy(&doc)
            );
        }
    }
}
