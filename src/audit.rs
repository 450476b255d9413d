//! The audit line: one JSON object per decision, written straight into a reused buffer.
//!
//! The line has exactly the shape `tracing_subscriber`'s JSON formatter gives the
//! `graphguard::audit` event (timestamp, level, message, the fields in order, target), so
//! log pipelines see one format whichever way it was written; formatting it by hand costs a
//! fraction of the generic formatter. With another log format (`pretty`, `compact`) the
//! gateway emits the event through `tracing` instead.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abac::AccessDecision;
use crate::decide::Step;

/// Where finished audit lines go (the buffered log sink in the server).
pub trait LineSink: Send + Sync {
    /// Write one complete line (including its newline).
    fn write_line(&self, line: &[u8]);
}

impl<W: std::io::Write + Send + 'static> LineSink for crate::logwriter::BufferedLog<W> {
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
    /// The policy version.
    pub policy: &'a str,
    /// Time from the request's arrival to the response headers.
    pub elapsed: Duration,
}

impl AuditLine<'_> {
    /// `handlers`: `event=handler` per step, `!` when it refused.
    pub fn handlers(&self) -> String {
        let mut s = String::new();
        for (i, st) in self.steps.iter().enumerate() {
            let _ = write!(
                s,
                "{}{}={}{}",
                if i > 0 { "," } else { "" },
                st.event,
                st.handler.as_deref().unwrap_or("-"),
                if st.allowed { "" } else { "!" }
            );
        }
        s
    }

    /// `filters`: `event:{filter as JSON}` per step that returned a filter.
    pub fn filters(&self) -> String {
        let mut s = String::new();
        for st in self.steps {
            if let Some(f) = &st.filter {
                let _ = write!(
                    s,
                    "{}{}:{}",
                    if s.is_empty() { "" } else { "," },
                    st.event,
                    crate::explain::filter_json(f)
                );
            }
        }
        s
    }

    /// `stamped`: `event:key+key` per step that stamps metadata.
    pub fn stamped(&self) -> String {
        let mut s = String::new();
        for st in self.steps.iter().filter(|st| !st.stamped.is_empty()) {
            let _ = write!(
                s,
                "{}{}:{}",
                if s.is_empty() { "" } else { "," },
                st.event,
                st.stamped.join("+")
            );
        }
        s
    }

    /// `access`: `permission=allow|deny:Reason[ role=R][ policies=A|B]` per decision.
    pub fn access(&self) -> String {
        let mut s = String::new();
        for (i, a) in self.access.iter().enumerate() {
            let _ = write!(
                s,
                "{}{}={}:{:?}",
                if i > 0 { "," } else { "" },
                a.permission,
                if a.allowed { "allow" } else { "deny" },
                a.reason
            );
            if let Some(role) = a.rbac.as_ref().and_then(|r| r.via_role.as_deref()) {
                let _ = write!(s, " role={role}");
            }
            let mut first = true;
            for g in a.groups.iter().filter(|g| g.matched) {
                s.push_str(if first { " policies=" } else { "|" });
                s.push_str(&g.policy);
                first = false;
            }
        }
        s
    }

    /// The whole line, newline included, appended to `out`.
    pub fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        rfc3339_micros(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"decision\"");
        field_str(out, "request_id", self.request_id);
        field_str(out, "method", self.method);
        field_str(out, "path", self.path);
        let _ = write!(out, ",\"status\":{}", self.status);
        field_str(out, "decision", self.decision);
        field_str(out, "user", self.user);
        // Empty strings when there are no steps (no allocation then).
        field_str(out, "handlers", &self.handlers());
        field_str(out, "access", &self.access());
        field_str(out, "filters", &self.filters());
        field_str(out, "stamped", &self.stamped());
        field_str(out, "policy", self.policy);
        let _ = write!(
            out,
            ",\"elapsed_us\":{},\"target\":\"graphguard::audit\"}}\n",
            self.elapsed.as_micros()
        );
    }
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    escape_into(out, value);
    out.push(b'"');
}

/// `s` as the inside of a JSON string.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
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
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.extend_from_slice(escaped);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
fn rfc3339_micros(t: SystemTime, out: &mut Vec<u8>) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let mut out = Vec::new();
        rfc3339_micros(
            UNIX_EPOCH + Duration::from_micros(1_795_394_123_283_994),
            &mut out,
        );
        assert_eq!(out, b"2026-11-23T00:35:23.283994Z");
    }

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
            escape_into(&mut out, s);
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
}
