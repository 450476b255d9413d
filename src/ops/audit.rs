//! The audit line: one JSON object per decision, written straight into a reused buffer.
//!
//! The line has exactly the shape `tracing_subscriber`'s JSON formatter gives the
//! `graphguard::audit` event (timestamp, level, message, the fields in order, target), so
//! log pipelines see one format whichever way it was written; formatting it by hand costs a
//! fraction of the generic formatter. With another log format (`pretty`, `compact`) the
//! gateway emits the event through `tracing` instead.

use std::time::{Duration, SystemTime};

use crate::decide::Step;
use crate::error::LimitHit;
use crate::policy::access::AccessDecision;

/// Where finished audit lines go (the buffered log sink in the server).
pub trait LineSink: Send + Sync {
    /// Write one complete line (including its newline).
    fn write_line(&self, line: &[u8]);
}

impl<W: std::io::Write + Send + 'static> LineSink for crate::ops::logwriter::BufferedLog<W> {
    fn write_line(&self, line: &[u8]) {
        let _ = self.append_line(line);
    }
}

/// One decision, as logged.
#[derive(Debug)]
pub struct AuditLine<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The method.
    pub method: &'a str,
    /// The path (no query).
    pub path: &'a str,
    /// The response status.
    pub status: u16,
    /// `allow`, `deny`, `public` or `error`.
    pub decision: &'a str,
    /// The user's identity (`-`: none).
    pub user: &'a str,
    /// The handler calls.
    pub steps: &'a [Step],
    /// The access-policy decisions.
    pub access: &'a [AccessDecision],
    /// The limit that refused the request (429) or could not be checked (503).
    pub limit: Option<&'a LimitHit>,
    /// The policy version.
    pub policy: &'a str,
    /// Time from the request's arrival to the response headers.
    pub elapsed: Duration,
}

impl AuditLine<'_> {
    /// `handlers`: `event=handler` per step, `!` when it refused.
    pub fn handlers(&self) -> String {
        text(|out| self.put_handlers(out))
    }

    /// `filters`: `event:{filter as JSON}` per step that returned a filter.
    pub fn filters(&self) -> String {
        text(|out| self.put_filters(out))
    }

    /// `stamped`: `event:key+key` per step that stamps metadata.
    pub fn stamped(&self) -> String {
        text(|out| self.put_stamped(out))
    }

    /// `access`: `permission=allow|deny:Reason[ role=R][ policies=A|B]` per decision.
    pub fn access(&self) -> String {
        text(|out| self.put_access(out))
    }

    fn put_handlers<S: Sink>(&self, out: &mut S) {
        for (i, st) in self.steps.iter().enumerate() {
            if i > 0 {
                out.put(b",");
            }
            put_event(out, st.event);
            out.put(b"=");
            out.put(st.handler.as_deref().unwrap_or("-").as_bytes());
            if !st.allowed {
                out.put(b"!");
            }
        }
    }

    fn put_filters<S: Sink>(&self, out: &mut S) {
        let mut first = true;
        for st in self.steps {
            if let Some(f) = &st.filter {
                if !first {
                    out.put(b",");
                }
                first = false;
                put_event(out, st.event);
                out.put(b":");
                // Writing into a Vec (or an escaping view of one) cannot fail.
                let _ = serde_json::to_writer(&mut *out, &**f);
            }
        }
    }

    fn put_stamped<S: Sink>(&self, out: &mut S) {
        let mut first = true;
        for st in self.steps.iter().filter(|st| !st.stamped.is_empty()) {
            if !first {
                out.put(b",");
            }
            first = false;
            put_event(out, st.event);
            out.put(b":");
            for (i, key) in st.stamped.iter().enumerate() {
                if i > 0 {
                    out.put(b"+");
                }
                out.put(key.as_bytes());
            }
        }
    }

    fn put_access<S: Sink>(&self, out: &mut S) {
        for (i, a) in self.access.iter().enumerate() {
            if i > 0 {
                out.put(b",");
            }
            out.put(a.permission.as_bytes());
            out.put(if a.allowed { b"=allow:" } else { b"=deny:" });
            out.put(a.reason.as_str().as_bytes());
            if let Some(role) = a.rbac.as_ref().and_then(|r| r.via_role.as_deref()) {
                out.put(b" role=");
                out.put(role.as_bytes());
            }
            let mut first = true;
            for g in a.groups.iter().filter(|g| g.matched) {
                out.put(if first { b" policies=" } else { b"|" });
                out.put(g.policy.as_bytes());
                first = false;
            }
        }
    }

    /// The whole line, newline included, appended to `out`.
    pub fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        crate::clock::write_rfc3339_micros(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"decision\"");
        field_str(out, "request_id", self.request_id);
        field_str(out, "method", self.method);
        field_str(out, "path", self.path);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        field_str(out, "decision", self.decision);
        field_str(out, "user", self.user);
        // Each list is written straight into the line, escaped as it goes (empty strings
        // when there are no steps).
        field_with(out, "handlers", |e| self.put_handlers(e));
        field_with(out, "access", |e| self.put_access(e));
        field_with(out, "filters", |e| self.put_filters(e));
        field_with(out, "stamped", |e| self.put_stamped(e));
        if let Some(l) = self.limit {
            field_str(out, "limit", &l.name);
            field_str(out, "limit_key", &l.key);
        }
        field_str(out, "policy", self.policy);
        out.extend_from_slice(b",\"elapsed_us\":");
        let micros = u64::try_from(self.elapsed.as_micros()).unwrap_or(u64::MAX);
        out.extend_from_slice(itoa::Buffer::new().format(micros).as_bytes());
        out.extend_from_slice(b",\"target\":\"graphguard::audit\"}\n");
    }
}

/// Where a field's text goes: the raw bytes (a `Vec`, for `tracing`'s own formatter) or
/// the inside of a JSON string ([`Escaped`], for the hand-written line). Both take serde's
/// writer too; neither can fail.
trait Sink: std::io::Write {
    fn put(&mut self, bytes: &[u8]) {
        let _ = self.write_all(bytes);
    }
}

impl<W: std::io::Write> Sink for W {}

/// A view of a line that escapes what is written to it as the inside of a JSON string.
/// Escaping is byte by byte and never touches bytes >= 0x80, so text may arrive in any
/// pieces, even ones that split a UTF-8 sequence.
struct Escaped<'a>(&'a mut Vec<u8>);

impl std::io::Write for Escaped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        escape_into(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    // Every piece written is a `str` or serde_json's output, so this is UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn put_event<S: Sink>(out: &mut S, event: crate::event::Event) {
    out.put(event.resource.as_str().as_bytes());
    out.put(b":");
    out.put(event.action.as_str().as_bytes());
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    field_with(out, name, |e| e.put(value.as_bytes()));
}

fn field_with(out: &mut Vec<u8>, name: &str, body: impl FnOnce(&mut Escaped<'_>)) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    body(&mut Escaped(out));
    out.push(b'"');
}

/// The first byte JSON requires escaped (a control byte, `"` or `\`), eight bytes per step.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let (words, tail) = bytes.as_chunks::<8>();
    for (i, w) in words.iter().enumerate() {
        let x = u64::from_le_bytes(*w);
        // A byte of `x ^ c` is zero where `x` has `c`; `v - ONES & !v & HIGH` is non-zero
        // exactly when `v` has a zero byte, and `x - 0x20 * ONES & !x & HIGH` exactly when
        // `x` has a byte below 0x20 (the classic "has zero / has less" tests; only which
        // byte is marked can be off, so the word is searched byte by byte after a hit).
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let hit = (quote.wrapping_sub(ONES) & !quote & HIGH)
            | (slash.wrapping_sub(ONES) & !slash & HIGH)
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if hit != 0 {
            if let Some(j) = w.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\') {
                return Some(i * 8 + j);
            }
        }
    }
    tail.iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|j| words.len() * 8 + j)
}

/// `bytes` as the inside of a JSON string (serde_json's escapes: the short forms, `\u00XX`
/// for other control bytes).
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // The common case, text with nothing to escape, is one copy.
    let Some(first) = first_to_escape(bytes) else {
        out.extend_from_slice(bytes);
        return;
    };
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn escaping_matches_serde_json() {
        for s in [
            "plain",
            "q\"b\\s",
            "nl\n\r\t\u{8}\u{c}",
            "\u{0}\u{1f}é€😀",
            "",
        ] {
            let mut out = vec![b'"'];
            escape_into(&mut out, s.as_bytes());
            out.push(b'"');
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap());
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_the_tracing_shape() {
        let line = AuditLine {
            request_id: "r-1",
            method: "GET",
            path: "/threads/\"x\"",
            status: 404,
            decision: "deny",
            user: "alice",
            steps: &[],
            access: &[],
            limit: None,
            policy: "abc",
            elapsed: Duration::from_micros(42),
        };
        let mut out = Vec::new();
        line.write_json(UNIX_EPOCH, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "message",
                "request_id",
                "method",
                "path",
                "status",
                "decision",
                "user",
                "handlers",
                "access",
                "filters",
                "stamped",
                "policy",
                "elapsed_us",
                "target"
            ]
        );
        assert_eq!(v["path"], "/threads/\"x\"");
        assert_eq!(v["status"], 404);
        assert_eq!(v["elapsed_us"], 42);
        assert_eq!(v["target"], "graphguard::audit");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
    }

    /// The lists as the generic formatter wrote them before they were written by hand:
    /// `Display`/`Debug` and `explain::filter_json`.
    #[test]
    fn lists_match_their_formatted_reference() {
        use crate::event::{Action, Event, Resource};
        use crate::policy::access::{GroupTrace, RbacResult, Reason};
        use crate::policy::filter::{Cond, Filter};
        use serde_json::json;
        use std::sync::Arc;

        let leaf = |k: &str, v: serde_json::Value| Filter {
            conds: vec![Cond::Eq(k.into(), v)],
            any: None,
            all: None,
        };
        let filter = Filter {
            conds: vec![
                Cond::Eq("owner".into(), json!("al\"ice\n")),
                Cond::Contains("tags".into(), json!(["a", 1])),
            ],
            any: Some(vec![leaf("x", json!(1)), leaf("y", json!({"z": null}))]),
            all: Some(vec![leaf("é", json!(true)), leaf("w", json!(2.5))]),
        };
        let steps = [
            Step {
                event: Event::new(Resource::Threads, Action::CreateRun),
                handler: Some("threads:create_run".into()),
                rule: Some(0),
                allowed: true,
                filter: Some(Arc::new(filter)),
                stamped: Arc::from(vec!["owner".to_string(), "team".to_string()]),
            },
            Step {
                event: Event::new(Resource::Assistants, Action::Read),
                handler: None,
                rule: None,
                allowed: false,
                filter: None,
                stamped: Arc::from(Vec::<String>::new()),
            },
        ];
        let group = |policy: &str, matched| GroupTrace {
            policy: policy.into(),
            effect: crate::policy::access::Effect::Allow,
            group: 0,
            matched,
            failed: None,
        };
        let access = [
            AccessDecision {
                permission: "threads:create_run".into(),
                allowed: true,
                reason: Reason::AllowGrants,
                rbac: Some(RbacResult {
                    permitted: true,
                    via_role: Some("admin".into()),
                }),
                groups: vec![group("p1", true), group("p2", false), group("p3", true)],
            },
            AccessDecision {
                permission: "assistants:read".into(),
                allowed: false,
                reason: Reason::RbacFallbackDeny,
                rbac: None,
                groups: vec![],
            },
        ];
        let line = AuditLine {
            request_id: "r",
            method: "POST",
            path: "/threads/x/runs",
            status: 200,
            decision: "allow",
            user: "u",
            steps: &steps,
            access: &access,
            limit: None,
            policy: "v",
            elapsed: Duration::from_micros(7),
        };
        let filter_ref = format!(
            "threads:create_run:{}",
            crate::ops::explain::filter_json(steps[0].filter.as_deref().unwrap())
        );
        assert_eq!(line.filters(), filter_ref);
        assert_eq!(
            line.handlers(),
            "threads:create_run=threads:create_run,assistants:read=-!"
        );
        assert_eq!(line.stamped(), "threads:create_run:owner+team");
        assert_eq!(
            line.access(),
            "threads:create_run=allow:AllowGrants role=admin policies=p1|p3,\
             assistants:read=deny:RbacFallbackDeny"
        );
        for r in [
            Reason::Disabled,
            Reason::DenyWins,
            Reason::AllowGrants,
            Reason::RbacFallbackAllow,
            Reason::RbacFallbackDeny,
        ] {
            assert_eq!(r.as_str(), format!("{r:?}"));
        }
        // In the line, each list is the same text as a JSON string.
        let mut out = Vec::new();
        line.write_json(UNIX_EPOCH + Duration::from_secs(86_399), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["filters"], filter_ref);
        assert_eq!(v["handlers"], line.handlers());
        assert_eq!(v["access"], line.access());
        assert_eq!(v["stamped"], line.stamped());
        assert_eq!(v["timestamp"], "1970-01-01T23:59:59.000000Z");
        assert_eq!(v["elapsed_us"], 7);
    }

    /// The word-at-a-time search agrees with the byte-by-byte one everywhere in a word.
    #[test]
    fn first_to_escape_matches_the_plain_search() {
        let plain = |b: &[u8]| b.iter().position(|&c| c < 0x20 || c == b'"' || c == b'\\');
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40 {
            for _ in 0..400 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly plain text, with the bytes around each boundary.
                        match seed % 16 {
                            0 => b'"',
                            1 => b'\\',
                            2 => (seed >> 8) as u8 % 0x20,
                            3 => [0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff]
                                [(seed >> 8) as usize % 8],
                            _ => b'a' + (seed >> 8) as u8 % 26,
                        }
                    })
                    .collect();
                assert_eq!(first_to_escape(&s), plain(&s), "{s:?}");
            }
        }
    }
}
