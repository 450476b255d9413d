//! Splicing edits into a top-level JSON object request body.
//!
//! A full `serde_json::Value` round trip (parse everything, edit, re-serialize
//! everything) costs allocations proportional to the whole body even when only
//! one small member (typically `metadata`) changes. [`ObjectBody`] instead
//! validates the body once without building a tree, records the byte spans of
//! the top-level members, and [`ObjectBody::splice`] copies every untouched
//! byte verbatim while replacing, appending or removing members.
//!
//! An empty object body `{}` is a valid input; an empty byte slice is not
//! (it is reported as [`BodyError::InvalidJson`]) — callers decide what an
//! empty body means.
//!
//! Depth: the top-level object counts as depth 1, each nested object or array
//! adds one. Nothing here recurses (the byte scanner is iterative and
//! serde_json skips ignored values iteratively), so `max_depth` is honoured
//! exactly, even above serde_json's own recursion limit of 128 — but note that
//! [`ObjectBody::get`] on a value nested that deep will then fail.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::DeserializeOwned;

use super::scan;

/// The top-level key whose object value is also checked for duplicate keys.
const METADATA: &str = "metadata";

/// Above this many keys, duplicate detection and edit lookup use hashing
/// instead of a linear scan.
const LINEAR_LIMIT: usize = 16;

/// Why a body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not valid JSON (includes invalid UTF-8 and trailing garbage); carries
    /// the parser's message.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The top-level value is valid JSON but not an object.
    #[error("request body is not a JSON object")]
    NotAnObject,
    /// The same key (compared after unescaping) appears twice at top level or
    /// twice inside the object under `metadata`; carries the unescaped key.
    #[error("duplicate key {} in request body", quoted(.0))]
    DuplicateKey(String),
    /// Objects/arrays are nested deeper than the allowed limit.
    #[error("request body is nested too deeply")]
    TooDeep,
}

/// A key as a JSON string literal.
fn quoted(key: &str) -> String {
    let mut quoted = Vec::with_capacity(key.len() + 2);
    write_json_string(&mut quoted, key);
    String::from_utf8_lossy(&quoted).into_owned()
}

/// One object member: unescaped key plus byte offsets into the source.
struct Member<'a> {
    /// The key after unescaping (filled in once the body is known to be valid).
    key: Cow<'a, str>,
    /// Offset of the key's opening quote.
    key_start: usize,
    /// Offset of the first byte of the value (after `:` and whitespace).
    value_start: usize,
    /// Offset one past the last byte of the value.
    value_end: usize,
}

/// A validated JSON object body with the byte spans of its top-level members.
pub struct ObjectBody<'a> {
    /// The whole body, exactly as received.
    src: &'a [u8],
    /// Offset of the top-level `{`.
    open: usize,
    /// Top-level members in source order.
    members: Vec<Member<'a>>,
    /// The object under the top-level `metadata` key, indexed by [`ObjectBody::parse`] for its
    /// duplicate check and kept, so that [`ObjectBody::merge_metadata`] does not scan it again.
    metadata: Option<Box<ObjectBody<'a>>>,
}

impl fmt::Debug for ObjectBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBody")
            .field("len", &self.src.len())
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> ObjectBody<'a> {
    /// Validates `src` fully (syntax, UTF-8, nesting <= max_depth, duplicate
    /// keys at top level and inside a top-level "metadata" object) and indexes
    /// the top-level members.
    pub fn parse(src: &'a [u8], max_depth: usize) -> Result<Self, BodyError> {
        parse_object(src, max_depth, Some(METADATA))
    }

    /// Raw bytes of the value of top-level key `key` (compared after
    /// unescaping), if present. Surrounding whitespace is not included.
    pub fn get_raw(&self, key: &str) -> Option<&'a [u8]> {
        self.members
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| self.src.get(m.value_start..m.value_end))
    }

    /// Deserialize the value of `key` (serde_json::from_slice on the raw
    /// bytes). `Ok(None)` when the key is absent; a value that does not fit
    /// `T` is reported as [`BodyError::InvalidJson`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, BodyError> {
        self.get_raw(key)
            .map(|raw| serde_json::from_slice(raw).map_err(json_error))
            .transpose()
    }

    /// [`merge_object_pairs`] applied to this body's `metadata` value: from the index
    /// [`ObjectBody::parse`] built when the value is an object, without scanning it again.
    pub fn merge_metadata<'s>(
        &self,
        set: impl IntoIterator<Item = (&'s str, &'s serde_json::Value)>,
    ) -> Result<Vec<u8>, BodyError> {
        match &self.metadata {
            Some(inner) => merge_into(inner, set),
            None => merge_object_pairs(self.get_raw(METADATA), set),
        }
    }

    /// The whole body, as received.
    pub fn source(&self) -> &'a [u8] {
        self.src
    }

    /// Top-level keys in order (unescaped).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.members.iter().map(|m| m.key.as_ref())
    }

    /// Top-level members in order: the unescaped key and the raw value.
    pub fn members(&self) -> impl Iterator<Item = (&str, &'a [u8])> + '_ {
        self.members.iter().map(|m| {
            let raw = self.src.get(m.value_start..m.value_end).unwrap_or_default();
            (m.key.as_ref(), raw)
        })
    }

    /// Produce a new body with edits applied: for each `(key, Some(raw_json))`
    /// replace the value if the key exists (keeping its position) or append a
    /// new member at the end; `(key, None)` removes the member (commas are
    /// kept consistent). Values are raw JSON bytes the caller already
    /// serialized; they are inserted verbatim and not validated. Everything
    /// else is copied byte for byte.
    ///
    /// If a key appears more than once in `edits`, the last edit for it wins;
    /// new keys are appended in the order of their first appearance in
    /// `edits`. Removing an absent key is a no-op.
    pub fn splice(&self, edits: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut out = Copied {
            src: self.src,
            out: Vec::with_capacity(self.src.len() + edits_len(edits)),
        };
        self.splice_into(edits, &mut out);
        out.out
    }

    /// [`ObjectBody::splice`] as pieces: ranges of the source and the few new bytes, for a
    /// caller that holds the source in shared memory and can send the pieces as they are
    /// (no copy of the untouched bytes, however large the body).
    pub fn splice_pieces(&self, edits: &[(&str, Option<&[u8]>)]) -> Spliced {
        let mut out = Spliced {
            pieces: Vec::with_capacity(3),
            new: Vec::with_capacity(edits_len(edits)),
        };
        self.splice_into(edits, &mut out);
        out
    }

    /// [`ObjectBody::splice`] for a body that is forwarded: a large one as pieces
    /// ([`ObjectBody::splice_pieces`]), so that its untouched bytes are sent from the
    /// request's own buffer instead of being copied.
    pub fn splice_body(&self, edits: &[(&str, Option<&[u8]>)]) -> NewBody {
        if self.src.len() >= SHARE_FROM {
            NewBody::Spliced(self.splice_pieces(edits))
        } else {
            NewBody::Whole(self.splice(edits))
        }
    }

    fn splice_into(&self, edits: &[(&str, Option<&[u8]>)], out: &mut impl SpliceOut) {
        let mut table = EditTable::new(edits);
        let src = self.src;
        let head_end = self.open + 1;
        out.copy(0, head_end);

        let mut emitted = 0usize;
        let mut prev_end = head_end;
        let leading = self.members.first().map(|m| (head_end, m.key_start));
        for m in &self.members {
            let edit = table.find(&m.key);
            let mut replacement = None;
            let mut removed = false;
            if let Some((_, value, applied)) = edit.and_then(|idx| table.edits.get_mut(idx)) {
                *applied = true;
                match value {
                    Some(v) => replacement = Some(*v),
                    None => removed = true,
                }
            }
            if !removed {
                if emitted == 0 {
                    if let Some((a, b)) = leading {
                        out.copy(a, b);
                    }
                } else {
                    // Original separator before this member: whitespace, ',', whitespace.
                    out.copy(prev_end, m.key_start);
                }
                out.copy(m.key_start, m.value_start);
                match replacement {
                    Some(v) => out.add(v),
                    None => out.copy(m.value_start, m.value_end),
                }
                emitted += 1;
            }
            prev_end = m.value_end;
        }

        for (key, value, applied) in &table.edits {
            if let (false, Some(v)) = (*applied, value) {
                if emitted > 0 {
                    out.add(b",");
                }
                out.add_with(|buf| {
                    write_json_string(buf, key);
                    buf.push(b':');
                });
                out.add(v);
                emitted += 1;
            }
        }

        // Whatever followed the last original member: whitespace, '}', trailing whitespace.
        out.copy(prev_end, src.len());
    }
}

/// Room the edits may add (keys quoted, separators, values).
fn edits_len(edits: &[(&str, Option<&[u8]>)]) -> usize {
    edits
        .iter()
        .map(|(k, v)| k.len() + 8 + v.map_or(0, <[u8]>::len))
        .sum()
}

/// Where a splice writes: `copy` a range of the source (always in range: the scanner's
/// spans), add new bytes (`add_with` writes them into the output's buffer).
trait SpliceOut {
    fn copy(&mut self, start: usize, end: usize);
    fn add_with(&mut self, write: impl FnOnce(&mut Vec<u8>));
    fn add(&mut self, bytes: &[u8]) {
        self.add_with(|buf| buf.extend_from_slice(bytes));
    }
}

/// A splice into one new buffer.
struct Copied<'a> {
    src: &'a [u8],
    out: Vec<u8>,
}

impl SpliceOut for Copied<'_> {
    fn copy(&mut self, start: usize, end: usize) {
        push(&mut self.out, self.src.get(start..end));
    }
    fn add_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.out);
    }
}

/// Bodies from this size on are spliced as pieces: below it, one copy costs less than
/// sending several buffers.
const SHARE_FROM: usize = 16 * 1024;

/// A replacement request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewBody {
    /// A body of its own.
    Whole(Vec<u8>),
    /// A splice of the request's body (see [`Spliced`]).
    Spliced(Spliced),
}

impl NewBody {
    /// The whole body in one buffer, given the request body it was made from.
    pub fn bytes<'s>(&'s self, original: &[u8]) -> Cow<'s, [u8]> {
        match self {
            NewBody::Whole(b) => Cow::Borrowed(b),
            NewBody::Spliced(s) => Cow::Owned(s.to_vec(original)),
        }
    }
}

impl From<Vec<u8>> for NewBody {
    fn from(b: Vec<u8>) -> Self {
        NewBody::Whole(b)
    }
}

/// A splice as pieces: ranges of the source it was made from and ranges of its own new
/// bytes, in order. Adjacent pieces of the same kind are merged, so a one-member edit is
/// three pieces: the source before the value, the new value, the source after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced {
    pieces: Vec<Piece>,
    new: Vec<u8>,
}

/// One piece of a [`Spliced`] body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `start..end` of the source.
    Source(usize, usize),
    /// `start..end` of the new bytes.
    New(usize, usize),
}

impl SpliceOut for Spliced {
    fn copy(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        match self.pieces.last_mut() {
            Some(Piece::Source(_, e)) if *e == start => *e = end,
            _ => self.pieces.push(Piece::Source(start, end)),
        }
    }
    fn add_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.new.len();
        write(&mut self.new);
        let end = self.new.len();
        if start == end {
            return;
        }
        match self.pieces.last_mut() {
            Some(Piece::New(_, e)) if *e == start => *e = end,
            _ => self.pieces.push(Piece::New(start, end)),
        }
    }
}

impl Spliced {
    /// The pieces, in order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The pieces and the new bytes, taken apart.
    pub fn into_parts(self) -> (Vec<Piece>, Vec<u8>) {
        (self.pieces, self.new)
    }

    /// The new bytes the [`Piece::New`] ranges index.
    pub fn new_bytes(&self) -> &[u8] {
        &self.new
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match *p {
                Piece::Source(a, b) | Piece::New(a, b) => b - a,
            })
            .sum()
    }

    /// Whether the body is empty (never, for a splice of an object).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The whole body in one buffer, given the source it was spliced from.
    pub fn to_vec(&self, src: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for p in &self.pieces {
            match *p {
                Piece::Source(a, b) => push(&mut out, src.get(a..b)),
                Piece::New(a, b) => push(&mut out, self.new.get(a..b)),
            }
        }
        out
    }
}

/// Given the raw bytes of an existing JSON object value (e.g. the body's
/// `metadata`; `None` or `null` means `{}`), return the raw bytes of that
/// object with each key of `set` overwritten (in place) or added (at the
/// end). Keys are compared after unescaping. The existing bytes are
/// validated (syntax, UTF-8, duplicate keys at its top level) but their depth
/// is not limited — pass bytes from a body that [`ObjectBody::parse`]
/// already depth-checked. If they are valid JSON but not an object the result
/// is `Err(BodyError::NotAnObject)`.
pub fn merge_object_raw(
    existing: Option<&[u8]>,
    set: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<u8>, BodyError> {
    merge_object_pairs(existing, pairs(set))
}

/// A map's members as the (key, value) pairs the merges take.
pub fn pairs(
    m: &serde_json::Map<String, serde_json::Value>,
) -> impl Iterator<Item = (&str, &serde_json::Value)> {
    m.iter().map(|(k, v)| (k.as_str(), v))
}

/// [`merge_object_raw`] with the keys to set given as pairs: a later pair for a key wins, the
/// first one fixes where a new key is appended (as inserting them into a map in turn would).
pub fn merge_object_pairs<'s>(
    existing: Option<&[u8]>,
    set: impl IntoIterator<Item = (&'s str, &'s serde_json::Value)>,
) -> Result<Vec<u8>, BodyError> {
    let src: &[u8] = match existing {
        None => b"{}",
        Some(raw) if trim_ws(raw) == b"null" => b"{}",
        Some(raw) => raw,
    };
    merge_into(&parse_object(src, usize::MAX, None)?, set)
}

/// `object` with each key of `set` overwritten in place or appended; the values are
/// serialized into one buffer.
fn merge_into<'s>(
    object: &ObjectBody<'_>,
    set: impl IntoIterator<Item = (&'s str, &'s serde_json::Value)>,
) -> Result<Vec<u8>, BodyError> {
    let set = set.into_iter();
    let mut values = Vec::with_capacity(64);
    let mut spans: Vec<(&str, usize, usize)> = Vec::with_capacity(set.size_hint().0);
    for (k, v) in set {
        let start = values.len();
        serde_json::to_writer(&mut values, v).map_err(json_error)?;
        spans.push((k, start, values.len()));
    }
    let edits: Vec<(&str, Option<&[u8]>)> = spans
        .iter()
        .map(|&(k, a, b)| (k, Some(values.get(a..b).unwrap_or_default())))
        .collect();
    Ok(object.splice(&edits))
}

/// Shared implementation of [`ObjectBody::parse`]; `inner_checked` names a
/// top-level key whose object value is also checked for duplicate keys.
///
/// One pass validates and indexes (see [`scan`]); UTF-8 is checked once for
/// the whole text before it.
fn parse_object<'a>(
    src: &'a [u8],
    max_depth: usize,
    inner_checked: Option<&str>,
) -> Result<ObjectBody<'a>, BodyError> {
    let text = std::str::from_utf8(src).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
    parse_text(text, max_depth, inner_checked)
}

/// [`parse_object`] of text already known to be UTF-8.
fn parse_text<'a>(
    text: &'a str,
    max_depth: usize,
    inner_checked: Option<&str>,
) -> Result<ObjectBody<'a>, BodyError> {
    let src = text.as_bytes();
    let (open, spans) = match scan::scan(src, max_depth) {
        Ok(scan::Scanned::Object { open, members }) => (open, members),
        Ok(scan::Scanned::Other) => return Err(BodyError::NotAnObject),
        Err(scan::ScanError::TooDeep) => return Err(BodyError::TooDeep),
        Err(e) => return Err(BodyError::InvalidJson(e.describe(src))),
    };
    let members = members_of(text, &spans)?;
    check_duplicates(&members)?;

    let mut inner = None;
    if let Some(name) = inner_checked {
        if let Some(m) = members.iter().find(|m| m.key == name) {
            if src.get(m.value_start) == Some(&b'{') {
                // Already validated as part of the body; indexed again on its own.
                let inner_text = text.get(m.value_start..m.value_end).unwrap_or_default();
                inner = Some(Box::new(parse_text(inner_text, usize::MAX, None)?));
            }
        }
    }
    Ok(ObjectBody {
        src,
        open,
        members,
        metadata: inner,
    })
}

/// Members with unescaped keys for the spans of a validated object.
fn members_of<'a>(text: &'a str, spans: &[scan::Span]) -> Result<Vec<Member<'a>>, BodyError> {
    let mut members = Vec::with_capacity(spans.len());
    for s in spans {
        members.push(Member {
            key: unescape_key(text, s.key_start, s.key_end, s.key_escaped)?,
            key_start: s.key_start,
            value_start: s.value_start,
            value_end: s.value_end,
        });
    }
    Ok(members)
}

/// Map a serde_json error; its own recursion limit counts as "too deep".
fn json_error(e: serde_json::Error) -> BodyError {
    let msg = e.to_string();
    if msg.starts_with("recursion limit exceeded") {
        BodyError::TooDeep
    } else {
        BodyError::InvalidJson(msg)
    }
}

/// Unescaped key text for the string token at `start..end` (quotes included); `escaped`:
/// whether the scanner saw an escape in it (else the text between the quotes is the key).
fn unescape_key(
    text: &str,
    start: usize,
    end: usize,
    escaped: bool,
) -> Result<Cow<'_, str>, BodyError> {
    let token = text
        .get(start..end)
        .ok_or_else(|| BodyError::InvalidJson("internal error: key span out of range".into()))?;
    if escaped {
        // The scanner validated the escapes' syntax; what can still fail is an unpaired
        // surrogate, which has no text to compare (refused, on purpose).
        serde_json::from_str::<String>(token)
            .map(Cow::Owned)
            .map_err(|e| {
                BodyError::InvalidJson(format!("key with an unpaired surrogate escape: {e}"))
            })
    } else {
        Ok(Cow::Borrowed(
            token
                .get(1..token.len().saturating_sub(1))
                .unwrap_or_default(),
        ))
    }
}

/// Reject the first key that occurs twice.
fn check_duplicates(members: &[Member<'_>]) -> Result<(), BodyError> {
    let duplicate = |key: &str| Err(BodyError::DuplicateKey(key.to_owned()));
    if members.len() <= LINEAR_LIMIT {
        for (i, m) in members.iter().enumerate() {
            if members
                .get(..i)
                .is_some_and(|prev| prev.iter().any(|p| p.key == m.key))
            {
                return duplicate(&m.key);
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(members.len());
        for m in members {
            if !seen.insert(m.key.as_ref()) {
                return duplicate(&m.key);
            }
        }
    }
    Ok(())
}

/// Edits resolved so that each key appears once (last edit wins, first
/// appearance fixes the order of appended keys), each with whether it has been applied.
struct EditTable<'e> {
    edits: Vec<(&'e str, Option<&'e [u8]>, bool)>,
    index: Option<HashMap<&'e str, usize>>,
}

impl<'e> EditTable<'e> {
    fn new(raw: &[(&'e str, Option<&'e [u8]>)]) -> Self {
        let mut table = EditTable {
            edits: Vec::with_capacity(raw.len()),
            index: (raw.len() > LINEAR_LIMIT).then(HashMap::new),
        };
        for &(key, value) in raw {
            match table.find(key).and_then(|i| table.edits.get_mut(i)) {
                Some(slot) => slot.1 = value,
                None => {
                    let idx = table.edits.len();
                    table.edits.push((key, value, false));
                    if let Some(map) = table.index.as_mut() {
                        map.insert(key, idx);
                    }
                }
            }
        }
        table
    }

    fn find(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(map) => map.get(key).copied(),
            None => self.edits.iter().position(|(k, _, _)| *k == key),
        }
    }
}

/// Append `bytes` if present (spans computed by the scanner are always in range).
fn push(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    if let Some(b) = bytes {
        out.extend_from_slice(b);
    }
}

/// Append `s` as a JSON string literal (with quotes).
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(hex_digit(b >> 4));
                out.push(hex_digit(b & 0x0f));
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn hex_digit(n: u8) -> u8 {
    if n < 10 {
        b'0' + n
    } else {
        b'a' + (n - 10)
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ws(*last) {
            break;
        }
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn parse(src: &[u8]) -> Result<ObjectBody<'_>, BodyError> {
        ObjectBody::parse(src, 64)
    }

    fn splice_str(src: &str, edits: &[(&str, Option<&str>)]) -> Result<String, BodyError> {
        let body = parse(src.as_bytes())?;
        let edits: Vec<(&str, Option<&[u8]>)> = edits
            .iter()
            .map(|(k, v)| (*k, v.map(str::as_bytes)))
            .collect();
        let out = body.splice(&edits);
        assert_pieces_agree(&body, &edits, src.as_bytes(), &out);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The pieces of a splice are the copied splice, merged as far as they go.
    fn assert_pieces_agree(
        body: &ObjectBody<'_>,
        edits: &[(&str, Option<&[u8]>)],
        src: &[u8],
        copied: &[u8],
    ) {
        let pieces = body.splice_pieces(edits);
        assert_eq!(pieces.to_vec(src), copied);
        assert_eq!(pieces.len(), copied.len());
        for w in pieces.pieces().windows(2) {
            match w {
                [Piece::Source(_, e), Piece::Source(s, _)] => assert_ne!(e, s, "unmerged"),
                [Piece::New(..), Piece::New(..)] => panic!("unmerged new pieces"),
                _ => {}
            }
        }
        let new: usize = pieces
            .pieces()
            .iter()
            .map(|p| match *p {
                Piece::New(a, b) => b - a,
                Piece::Source(..) => 0,
            })
            .sum();
        assert_eq!(new, pieces.new_bytes().len(), "every new byte is used once");
    }

    fn top_keys(v: &Value) -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn replace_keeps_position_and_other_bytes_exact() -> TestResult {
        let src = "{ \"a\" : 1,\n  \"metadata\" :  {\"x\": 1} ,\"c\":[1, 2] }";
        let out = splice_str(src, &[("metadata", Some("{\"y\":2}"))])?;
        assert_eq!(
            out,
            "{ \"a\" : 1,\n  \"metadata\" :  {\"y\":2} ,\"c\":[1, 2] }"
        );
        Ok(())
    }

    #[test]
    fn append_adds_member_before_closing_brace() -> TestResult {
        let out = splice_str("{\"a\": 1 }\n", &[("b", Some("true"))])?;
        assert_eq!(out, "{\"a\": 1,\"b\":true }\n");
        Ok(())
    }

    #[test]
    fn append_to_empty_object_has_no_comma() -> TestResult {
        assert_eq!(splice_str("{}", &[("a", Some("1"))])?, "{\"a\":1}");
        assert_eq!(
            splice_str(" { \n } ", &[("a", Some("1")), ("b", Some("2"))])?,
            " {\"a\":1,\"b\":2 \n } "
        );
        Ok(())
    }

    #[test]
    fn remove_first_middle_last_keeps_commas_valid() -> TestResult {
        let src = "{\"a\":1, \"b\":2, \"c\":3}";
        assert_eq!(splice_str(src, &[("a", None)])?, "{\"b\":2, \"c\":3}");
        assert_eq!(splice_str(src, &[("b", None)])?, "{\"a\":1, \"c\":3}");
        assert_eq!(splice_str(src, &[("c", None)])?, "{\"a\":1, \"b\":2}");
        assert_eq!(splice_str(src, &[("a", None), ("c", None)])?, "{\"b\":2}");
        assert_eq!(splice_str(src, &[("zzz", None)])?, src);
        Ok(())
    }

    #[test]
    fn remove_all_members_gives_empty_object() -> TestResult {
        let src = "{ \"a\":1 , \"b\":2 }";
        assert_eq!(splice_str(src, &[("a", None), ("b", None)])?, "{ }");
        assert_eq!(
            splice_str(src, &[("a", None), ("b", None), ("n", Some("0"))])?,
            "{\"n\":0 }"
        );
        Ok(())
    }

    #[test]
    fn remove_and_append_together() -> TestResult {
        let out = splice_str("{\"a\":1,\"b\":2}", &[("a", None), ("c", Some("3"))])?;
        assert_eq!(out, "{\"b\":2,\"c\":3}");
        Ok(())
    }

    #[test]
    fn escaped_key_spelling_is_found_and_replaced() -> TestResult {
        let src = r#"{"meta\u0064ata":{"a":1},"z":0}"#;
        let body = parse(src.as_bytes())?;
        assert_eq!(body.keys().collect::<Vec<_>>(), vec!["metadata", "z"]);
        assert_eq!(body.get_raw("metadata"), Some(&b"{\"a\":1}"[..]));
        let out = body.splice(&[("metadata", Some(b"{}"))]);
        // The original key spelling is kept; only the value changes.
        assert_eq!(out, br#"{"meta\u0064ata":{},"z":0}"#.to_vec());
        Ok(())
    }

    #[test]
    fn new_keys_are_escaped_on_append() -> TestResult {
        let out = splice_str("{}", &[("a\"b\\c\n\u{1}", Some("1"))])?;
        assert_eq!(out, r#"{"a\"b\\c\n\u0001":1}"#);
        let v: Value = serde_json::from_str(&out)?;
        assert_eq!(v, json!({"a\"b\\c\n\u{1}": 1}));
        Ok(())
    }

    #[test]
    fn last_edit_for_a_key_wins() -> TestResult {
        let src = "{\"a\":1,\"b\":2}";
        assert_eq!(
            splice_str(src, &[("a", None), ("a", Some("9"))])?,
            "{\"a\":9,\"b\":2}"
        );
        assert_eq!(
            splice_str(src, &[("n", Some("1")), ("m", Some("2")), ("n", None)])?,
            "{\"a\":1,\"b\":2,\"m\":2}"
        );
        Ok(())
    }

    #[test]
    fn get_raw_get_and_keys() -> TestResult {
        let body = parse(br#" { "s" : "x\"y" , "n":[1,{"k":null}] , "o" : {} } "#)?;
        assert_eq!(body.keys().collect::<Vec<_>>(), vec!["s", "n", "o"]);
        assert_eq!(body.get_raw("s"), Some(&br#""x\"y""#[..]));
        assert_eq!(body.get_raw("n"), Some(&br#"[1,{"k":null}]"#[..]));
        assert_eq!(body.get_raw("missing"), None);
        assert_eq!(body.get::<String>("s")?, Some("x\"y".to_owned()));
        assert_eq!(body.get::<Value>("o")?, Some(json!({})));
        assert_eq!(body.get::<String>("missing")?, None);
        assert!(matches!(
            body.get::<u32>("s"),
            Err(BodyError::InvalidJson(_))
        ));
        Ok(())
    }

    #[test]
    fn duplicate_top_level_key_rejected() {
        assert_eq!(
            parse(br#"{"a":1,"b":2,"a":3}"#).err(),
            Some(BodyError::DuplicateKey("a".into()))
        );
    }

    #[test]
    fn duplicate_top_level_key_with_escaped_spelling_rejected() {
        assert_eq!(
            parse(br#"{"metadata":{},"meta\u0064ata":{}}"#).err(),
            Some(BodyError::DuplicateKey("metadata".into()))
        );
    }

    #[test]
    fn duplicate_detection_with_many_keys_uses_hashing_path() {
        let mut src = String::from("{");
        for i in 0..100 {
            src.push_str(&format!("\"k{i}\":{i},"));
        }
        src.push_str("\"k\\u0035\":0}");
        assert_eq!(
            parse(src.as_bytes()).err(),
            Some(BodyError::DuplicateKey("k5".into()))
        );
    }

    #[test]
    fn duplicate_key_inside_metadata_rejected() {
        assert_eq!(
            parse(br#"{"metadata":{"owner":"a","owner":"b"}}"#).err(),
            Some(BodyError::DuplicateKey("owner".into()))
        );
        assert_eq!(
            parse(br#"{"x":1,"meta\u0064ata":{"o\u0077ner":"a","owner":"b"}}"#).err(),
            Some(BodyError::DuplicateKey("owner".into()))
        );
    }

    #[test]
    fn duplicate_keys_in_other_nested_objects_are_not_checked() -> TestResult {
        // Only the top level and `metadata` are checked (documented scope).
        parse(br#"{"config":{"a":1,"a":2},"metadata":{"n":{"b":1,"b":2}}}"#)?;
        Ok(())
    }

    #[test]
    fn metadata_not_an_object_is_reported_by_merge_object_raw() {
        let set = Map::from_iter([("owner".to_owned(), json!("u1"))]);
        for raw in [&b"[]"[..], b"\"x\"", b"1", b"true"] {
            assert_eq!(
                merge_object_raw(Some(raw), &set).err(),
                Some(BodyError::NotAnObject)
            );
        }
        assert!(matches!(
            merge_object_raw(Some(b"{\"a\":"), &set),
            Err(BodyError::InvalidJson(_))
        ));
    }

    #[test]
    fn metadata_not_an_object_is_accepted_by_parse() -> TestResult {
        let body = parse(br#"{"metadata":[1,1]}"#)?;
        assert_eq!(body.get_raw("metadata"), Some(&b"[1,1]"[..]));
        Ok(())
    }

    #[test]
    fn merge_object_raw_none_and_null_mean_empty_object() -> TestResult {
        let set = Map::from_iter([("owner".to_owned(), json!("u1"))]);
        assert_eq!(merge_object_raw(None, &set)?, br#"{"owner":"u1"}"#.to_vec());
        assert_eq!(
            merge_object_raw(Some(b" null "), &set)?,
            br#"{"owner":"u1"}"#.to_vec()
        );
        assert_eq!(merge_object_raw(None, &Map::new())?, b"{}".to_vec());
        Ok(())
    }

    #[test]
    fn merge_object_raw_overwrites_in_place_and_appends() -> TestResult {
        let existing = br#"{"a": 1, "o\u0077ner": "evil", "z": [ ]}"#;
        let set = Map::from_iter([
            ("owner".to_owned(), json!("u1")),
            ("new".to_owned(), json!({"k": [1, "}"]})),
        ]);
        let out = merge_object_raw(Some(existing), &set)?;
        assert_eq!(
            out,
            br#"{"a": 1, "o\u0077ner": "u1", "z": [ ],"new":{"k":[1,"}"]}}"#.to_vec()
        );
        let v: Value = serde_json::from_slice(&out)?;
        assert_eq!(
            v,
            json!({"a": 1, "owner": "u1", "z": [], "new": {"k": [1, "}"]}})
        );
        Ok(())
    }

    #[test]
    fn merge_metadata_from_the_parse_index_equals_merging_the_raw_value() -> TestResult {
        let set = Map::from_iter([
            ("owner".to_owned(), json!("u1")),
            ("team".to_owned(), json!(["a", "b"])),
        ]);
        for body in [
            &br#"{"metadata": {"a": 1, "o\u0077ner": "evil", "z": { }}, "limit": 10}"#[..],
            br#"{"metad\u0061ta" :{ } }"#,
            br#"{"limit": 10}"#,
            br#"{"metadata": null}"#,
            br#"{"metadata": {"owner": "x", "team": "y"}}"#,
            br#"{}"#,
        ] {
            let o = parse(body)?;
            let merged = o.merge_metadata(pairs(&set))?;
            assert_eq!(merged, merge_object_raw(o.get_raw("metadata"), &set)?);
            let v: Value = serde_json::from_slice(&merged)?;
            assert_eq!(v.get("owner"), Some(&json!("u1")), "{merged:?}");
            assert_eq!(v.get("team"), Some(&json!(["a", "b"])), "{merged:?}");
        }
        for body in [&br#"{"metadata": [1]}"#[..], br#"{"metadata": "x"}"#] {
            assert_eq!(
                parse(body)?.merge_metadata(pairs(&set)),
                Err(BodyError::NotAnObject)
            );
        }
        Ok(())
    }

    #[test]
    fn nested_strings_with_braces_quotes_backslashes_do_not_confuse_scanner() -> TestResult {
        let src = br#"{"a":"}{][\"\\","b":{"c":"\\\"}","d":["]","{",{"e":"\\"}]},"k\"}":"v\\","metadata":{"m":"\"}"}}"#;
        let body = parse(src)?;
        assert_eq!(
            body.keys().collect::<Vec<_>>(),
            vec!["a", "b", "k\"}", "metadata"]
        );
        assert_eq!(body.get_raw("a"), Some(&br#""}{][\"\\""#[..]));
        assert_eq!(
            body.get_raw("b"),
            Some(&br#"{"c":"\\\"}","d":["]","{",{"e":"\\"}]}"#[..])
        );
        assert_eq!(body.get_raw("k\"}"), Some(&br#""v\\""#[..]));
        let out = body.splice(&[("metadata", Some(b"{\"m\":1}")), ("a", None)]);
        let v: Value = serde_json::from_slice(&out)?;
        let mut expected: Value = serde_json::from_slice(src)?;
        if let Some(obj) = expected.as_object_mut() {
            obj.insert("metadata".into(), json!({"m": 1}));
            obj.shift_remove("a");
        }
        assert_eq!(v, expected);
        Ok(())
    }

    #[test]
    fn invalid_utf8_rejected() {
        for src in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"\xc3\":1}",
            b"{\"a\":1}\xff",
            b"{\"metadata\":{\"\xed\xa0\x80\":1}}",
        ] {
            assert!(
                matches!(parse(src), Err(BodyError::InvalidJson(_))),
                "{src:?}"
            );
        }
    }

    #[test]
    fn trailing_garbage_rejected() {
        for src in [
            &b"{} x"[..],
            b"{}{}",
            b"{\"a\":1}}",
            b"{\"a\":1},",
            b"{\"a\":1} \"",
        ] {
            assert!(
                matches!(parse(src), Err(BodyError::InvalidJson(_))),
                "{src:?}"
            );
        }
    }

    #[test]
    fn malformed_json_rejected() {
        for src in [
            &b"{\"a\":[1}]"[..],
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"{'a':1}",
            b"{\"a\":tru}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":01}",
            b"\xef\xbb\xbf{}",
        ] {
            assert!(
                matches!(parse(src), Err(BodyError::InvalidJson(_))),
                "{src:?}"
            );
        }
    }

    #[test]
    fn empty_slice_is_invalid_and_empty_object_is_valid() -> TestResult {
        assert!(matches!(parse(b""), Err(BodyError::InvalidJson(_))));
        assert!(matches!(parse(b"  \n"), Err(BodyError::InvalidJson(_))));
        let body = parse(b"{}")?;
        assert_eq!(body.keys().count(), 0);
        assert_eq!(body.splice(&[]), b"{}".to_vec());
        Ok(())
    }

    #[test]
    fn non_object_top_level_is_not_an_object() {
        for src in [&b"[]"[..], b"null", b" 1 ", b"\"{}\"", b"[{\"a\":1}]"] {
            assert_eq!(parse(src).err(), Some(BodyError::NotAnObject), "{src:?}");
        }
    }

    #[test]
    fn whitespace_heavy_body() -> TestResult {
        let src = b" \r\n\t{ \r\n\t\"a\" \r\n\t: \r\n\t[ 1 , { \"b\" : 2 } ] \r\n\t, \"metadata\"\t:\t{ }\n\n} \r\n\t";
        let body = parse(src)?;
        assert_eq!(body.get_raw("a"), Some(&b"[ 1 , { \"b\" : 2 } ]"[..]));
        assert_eq!(body.get_raw("metadata"), Some(&b"{ }"[..]));
        let merged = merge_object_raw(
            body.get_raw("metadata"),
            &Map::from_iter([("o".to_owned(), json!(1))]),
        )?;
        assert_eq!(merged, b"{\"o\":1 }".to_vec());
        let out = body.splice(&[("metadata", Some(&merged)), ("a", None)]);
        assert_eq!(
            out,
            b" \r\n\t{ \r\n\t\"metadata\"\t:\t{\"o\":1 }\n\n} \r\n\t".to_vec()
        );
        Ok(())
    }

    #[test]
    fn depth_limit_enforced_at_boundary() -> TestResult {
        // {"a":[[1]]} has depth 3.
        let src = br#"{"a":[[1]],"b":{"c":{}}}"#;
        ObjectBody::parse(src, 3)?;
        assert_eq!(ObjectBody::parse(src, 2).err(), Some(BodyError::TooDeep));
        assert_eq!(ObjectBody::parse(b"{}", 0).err(), Some(BodyError::TooDeep));
        ObjectBody::parse(b"{}", 1)?;
        // Brackets inside strings do not count.
        ObjectBody::parse(br#"{"a":"[[[[{{{{"}"#, 1)?;
        Ok(())
    }

    #[test]
    fn deep_nesting_100k_is_too_deep_without_stack_overflow() {
        let n = 100_000;
        let bare = "[".repeat(n);
        assert_eq!(
            ObjectBody::parse(bare.as_bytes(), 64).err(),
            Some(BodyError::TooDeep)
        );
        let closed = format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(
            ObjectBody::parse(closed.as_bytes(), 64).err(),
            Some(BodyError::TooDeep)
        );
        let in_object = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(
            ObjectBody::parse(in_object.as_bytes(), 64).err(),
            Some(BodyError::TooDeep)
        );
        let objects = format!("{{\"metadata\":{}", "{\"a\":".repeat(n));
        assert_eq!(
            ObjectBody::parse(objects.as_bytes(), 64).err(),
            Some(BodyError::TooDeep)
        );
    }

    #[test]
    fn deep_nesting_100k_with_unlimited_depth_does_not_overflow_stack() -> TestResult {
        let n = 100_000;
        let in_object = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        let body = ObjectBody::parse(in_object.as_bytes(), usize::MAX)?;
        assert_eq!(body.get_raw("a").map(<[u8]>::len), Some(2 * n));
        // Deserializing such a value hits serde_json's recursion limit.
        assert_eq!(body.get::<Value>("a").err(), Some(BodyError::TooDeep));
        let merged = merge_object_raw(Some(in_object.as_bytes()), &Map::new())?;
        assert_eq!(merged, in_object.into_bytes());
        Ok(())
    }

    #[test]
    fn max_depth_above_serde_limit_is_honoured_exactly() -> TestResult {
        let nest = |d: usize| format!("{{\"a\":{}{}}}", "[".repeat(d - 1), "]".repeat(d - 1));
        ObjectBody::parse(nest(200).as_bytes(), 200)?;
        assert_eq!(
            ObjectBody::parse(nest(201).as_bytes(), 200).err(),
            Some(BodyError::TooDeep)
        );
        Ok(())
    }

    #[test]
    fn lone_surrogate_escape_in_value_passes_through_but_not_in_key() -> TestResult {
        // serde_json's validator does not decode escapes of skipped values.
        let body = parse(br#"{"a":"\ud800","b":1}"#)?;
        assert_eq!(body.get_raw("a"), Some(&br#""\ud800""#[..]));
        assert!(matches!(
            parse(br#"{"\ud800":1}"#),
            Err(BodyError::InvalidJson(_))
        ));
        // Also inside `metadata`, whose keys are checked for duplicates (found by the splice
        // fuzz target: the refusal must say why, the property allows exactly this case).
        let e = parse(br#"{"meta\u0064ata":{"\uDDDDDDDDDD006fwn!r":"bob"}}"#);
        assert!(
            matches!(&e, Err(BodyError::InvalidJson(m)) if m.starts_with("key with an unpaired surrogate")),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn display_messages() {
        assert_eq!(
            BodyError::DuplicateKey("metadata".into()).to_string(),
            "duplicate key \"metadata\" in request body"
        );
        assert_eq!(
            BodyError::DuplicateKey("a\"b".into()).to_string(),
            "duplicate key \"a\\\"b\" in request body"
        );
        assert_eq!(
            BodyError::InvalidJson("EOF".into()).to_string(),
            "request body is not valid JSON: EOF"
        );
        assert_eq!(
            BodyError::NotAnObject.to_string(),
            "request body is not a JSON object"
        );
        assert_eq!(
            BodyError::TooDeep.to_string(),
            "request body is nested too deeply"
        );
        let msg = parse(b"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with("request body is not valid JSON: EOF"),
            "{msg}"
        );
    }

    #[test]
    fn five_megabyte_body_round_trip() -> TestResult {
        let mut src = String::from("{\"assistant_id\":\"agent\",\"input\":{\"messages\":[");
        let mut i = 0;
        while src.len() < 5 * 1024 * 1024 {
            if i > 0 {
                src.push(',');
            }
            src.push_str(&format!(
                "{{\"role\":\"user\",\"content\":\"msg {i}: {{}}[]\\\"\\\\ \\u00e9 ü 😀 \",\"n\":{i}.5}}"
            ));
            i += 1;
        }
        src.push_str("]},\"metadata\":{\"source\":\"web\",\"owner\":\"spoofed\"},\"stream_mode\":[\"values\"]}");
        let bytes = src.as_bytes();
        let body = parse(bytes)?;
        let set = Map::from_iter([("owner".to_owned(), json!("u-123"))]);
        let merged = merge_object_raw(body.get_raw("metadata"), &set)?;
        let out = body.splice(&[("metadata", Some(&merged))]);

        let meta_start = src.find("{\"source\"").unwrap_or_default();
        let old_meta = "{\"source\":\"web\",\"owner\":\"spoofed\"}";
        let new_meta = "{\"source\":\"web\",\"owner\":\"u-123\"}";
        assert_eq!(out.get(..meta_start), bytes.get(..meta_start));
        assert_eq!(
            out.get(meta_start..meta_start + new_meta.len()),
            Some(new_meta.as_bytes())
        );
        assert_eq!(
            out.get(meta_start + new_meta.len()..),
            bytes.get(meta_start + old_meta.len()..)
        );

        let mut expected: Value = serde_json::from_slice(bytes)?;
        if let Some(obj) = expected.as_object_mut() {
            obj.insert(
                "metadata".into(),
                json!({"source": "web", "owner": "u-123"}),
            );
        }
        assert_eq!(serde_json::from_slice::<Value>(&out)?, expected);
        Ok(())
    }

    #[test]
    fn splice_results_parse_to_expected_values() -> TestResult {
        type Case<'c> = (&'c str, Vec<(&'c str, Option<&'c str>)>, Value);
        let cases: Vec<Case> = vec![
            ("{}", vec![], json!({})),
            ("{}", vec![("a", None)], json!({})),
            ("{\"a\":1}", vec![("a", None)], json!({})),
            (
                "{\"a\":1}",
                vec![("a", Some("[1,2]"))],
                json!({"a": [1, 2]}),
            ),
            (
                "{\"a\":1,\"b\":{\"c\":2}}",
                vec![("b", None), ("d", Some("null")), ("a", Some("\"x\""))],
                json!({"a": "x", "d": null}),
            ),
            (
                " {\"metadata\" : null} ",
                vec![("metadata", Some("{\"o\":1}"))],
                json!({"metadata": {"o": 1}}),
            ),
            (
                "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}",
                vec![("b", None), ("c", None), ("e", Some("5"))],
                json!({"a": 1, "d": 4, "e": 5}),
            ),
        ];
        for (src, edits, expected) in cases {
            let out = splice_str(src, &edits)?;
            let v: Value = serde_json::from_str(&out)?;
            assert_eq!(v, expected, "{src} {edits:?} -> {out}");
            assert_eq!(
                top_keys(&v),
                top_keys(&expected),
                "{src} {edits:?} -> {out}"
            );
        }
        Ok(())
    }

    // ---- property-style tests -------------------------------------------------

    /// Deterministic xorshift64* generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
        fn pick<'p>(&mut self, items: &[&'p str]) -> &'p str {
            items
                .get(self.below(items.len()))
                .copied()
                .unwrap_or_default()
        }
    }

    const KEYS: &[&str] = &[
        "a",
        "b",
        "c",
        "metadata",
        "meta",
        "input",
        "x\"y",
        "back\\slash",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "ü",
        "😀",
        "tab\t",
        "nul\u{0}",
        "",
        "assistant_id",
        "config",
        "\u{7f}",
    ];
    const STRINGS: &[&str] = &[
        "",
        "plain",
        "}",
        "{",
        "\"",
        "\\",
        "\\\"",
        "]}",
        "\n\r\t",
        "é😀",
        "\u{1}\u{1f}",
        "/",
        "\"}\\\"{",
    ];
    const WS: &[&str] = &["", "", "", " ", "\n  ", "\t", " \r\n "];

    fn gen_value(rng: &mut Rng, depth: usize) -> Value {
        let kinds = if depth >= 4 { 5 } else { 7 };
        match rng.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(rng.chance(50)),
            2 => json!((rng.next() % 2_000_000) as i64 - 1_000_000),
            3 => json!((rng.next() % 1000) as f64 / 8.0),
            4 => Value::String(rng.pick(STRINGS).to_owned()),
            5 => Value::Array(
                (0..rng.below(4))
                    .map(|_| gen_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(gen_object(rng, depth + 1)),
        }
    }

    fn gen_object(rng: &mut Rng, depth: usize) -> Map<String, Value> {
        let mut map = Map::new();
        for _ in 0..rng.below(6) {
            let key = rng.pick(KEYS).to_owned();
            map.insert(key, gen_value(rng, depth));
        }
        map
    }

    /// Write a JSON string with randomly chosen (valid) escape spellings.
    fn write_str(rng: &mut Rng, s: &str, out: &mut String) {
        out.push('"');
        for ch in s.chars() {
            let forced = matches!(ch, '"' | '\\') || (ch as u32) < 0x20;
            if forced || rng.chance(15) {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            } else {
                out.push(ch);
            }
        }
        out.push('"');
    }

    /// Serialize with random whitespace and escape spellings.
    fn write_value(rng: &mut Rng, v: &Value, out: &mut String) {
        match v {
            Value::String(s) => write_str(rng, s, out),
            Value::Array(items) => {
                out.push('[');
                out.push_str(rng.pick(WS));
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(rng.pick(WS));
                    }
                    write_value(rng, item, out);
                    out.push_str(rng.pick(WS));
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                out.push_str(rng.pick(WS));
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(rng.pick(WS));
                    }
                    write_str(rng, k, out);
                    out.push_str(rng.pick(WS));
                    out.push(':');
                    out.push_str(rng.pick(WS));
                    write_value(rng, item, out);
                    out.push_str(rng.pick(WS));
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    fn write_random(rng: &mut Rng, v: &Value) -> String {
        let mut out = String::new();
        out.push_str(rng.pick(WS));
        write_value(rng, v, &mut out);
        out.push_str(rng.pick(WS));
        out
    }

    #[test]
    fn property_splice_matches_value_reference() -> TestResult {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..2000 {
            let original = gen_object(&mut rng, 1);
            let text = write_random(&mut rng, &Value::Object(original.clone()));
            let body = ObjectBody::parse(text.as_bytes(), 64)
                .map_err(|e| format!("round {round}: {e} in {text}"))?;
            assert_eq!(
                body.keys().collect::<Vec<_>>(),
                original.keys().map(String::as_str).collect::<Vec<_>>()
            );
            for (k, v) in &original {
                let raw = body.get_raw(k).ok_or("missing key")?;
                assert_eq!(&serde_json::from_slice::<Value>(raw)?, v);
            }

            // Unique-key edits, mixing existing and new keys.
            let mut edit_values: Vec<(String, Option<String>)> = Vec::new();
            let mut expected = original.clone();
            for _ in 0..rng.below(5) {
                let key = if rng.chance(50) && !original.is_empty() {
                    original
                        .keys()
                        .nth(rng.below(original.len()))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    rng.pick(KEYS).to_owned()
                };
                if edit_values.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                if rng.chance(35) {
                    expected.shift_remove(&key);
                    edit_values.push((key, None));
                } else {
                    let v = gen_value(&mut rng, 1);
                    let raw = write_random(&mut rng, &v);
                    expected.insert(key.clone(), v);
                    edit_values.push((key, Some(raw)));
                }
            }
            let edits: Vec<(&str, Option<&[u8]>)> = edit_values
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref().map(str::as_bytes)))
                .collect();
            let out = body.splice(&edits);
            assert_pieces_agree(&body, &edits, text.as_bytes(), &out);
            let got: Value = serde_json::from_slice(&out)
                .map_err(|e| format!("round {round}: {e} in {}", String::from_utf8_lossy(&out)))?;
            let expected = Value::Object(expected);
            assert_eq!(got, expected, "round {round}: {text} {edit_values:?}");
            assert_eq!(top_keys(&got), top_keys(&expected), "round {round}");
            // The result is itself an acceptable body.
            ObjectBody::parse(&out, 64)?;
        }
        Ok(())
    }

    #[test]
    fn property_merge_object_raw_matches_value_reference() -> TestResult {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for round in 0..1000 {
            let existing = gen_object(&mut rng, 2);
            let set = gen_object(&mut rng, 2);
            let (raw, mut expected) = match rng.below(5) {
                0 => (None, Map::new()),
                1 => (Some(" null".to_owned()), Map::new()),
                _ => (
                    Some(write_random(&mut rng, &Value::Object(existing.clone()))),
                    existing,
                ),
            };
            for (k, v) in &set {
                expected.insert(k.clone(), v.clone());
            }
            let out = merge_object_raw(raw.as_deref().map(str::as_bytes), &set)?;
            let got: Value = serde_json::from_slice(&out)?;
            let expected = Value::Object(expected);
            assert_eq!(got, expected, "round {round}: {raw:?} {set:?}");
            assert_eq!(top_keys(&got), top_keys(&expected), "round {round}");
        }
        Ok(())
    }

    #[test]
    fn property_escaped_duplicate_keys_always_rejected() {
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..500 {
            let mut object = gen_object(&mut rng, 1);
            let key = rng.pick(KEYS).to_owned();
            object.insert(key.clone(), json!(1));
            let mut text = write_random(&mut rng, &Value::Object(object));
            // Re-insert the same key, spelled differently, right after '{'.
            let mut dup = String::new();
            write_str(&mut rng, &key, &mut dup);
            dup.push_str(":0,");
            if let Some(pos) = text.find('{') {
                text.insert_str(pos + 1, &dup);
            }
            assert_eq!(
                ObjectBody::parse(text.as_bytes(), 64).err(),
                Some(BodyError::DuplicateKey(key.clone())),
                "{text}"
            );
        }
    }
}
