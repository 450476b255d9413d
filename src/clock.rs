//! The wall clock: whole seconds since the Unix epoch (what the gateway stores), and RFC 3339
//! timestamps in UTC with microseconds (what the audit log and the policy store write).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole seconds, rounded up, at least 1: what `Retry-After` and the `RateLimit` fields say
/// (a client told 0 would retry at once).
pub fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, written into `out` without `core::fmt` (the audit
/// line writes one per request).
pub fn write_rfc3339_micros(t: SystemTime, out: &mut Vec<u8>) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    // Years outside 0..=9999 do not fit the format; clamp rather than widen the field.
    digits(out, y.clamp(0, 9999) as u64, 4);
    out.push(b'-');
    digits(out, u64::from(m), 2);
    out.push(b'-');
    digits(out, u64::from(d), 2);
    out.push(b'T');
    digits(out, rem / 3600, 2);
    out.push(b':');
    digits(out, rem % 3600 / 60, 2);
    out.push(b':');
    digits(out, rem % 60, 2);
    out.push(b'.');
    digits(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// [`write_rfc3339_micros`] as a string.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(27);
    write_rfc3339_micros(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Now, as [`rfc3339_micros`].
pub fn rfc3339_now() -> String {
    rfc3339_micros(SystemTime::now())
}

/// `n` in exactly `width` decimal digits (zero-padded; higher digits dropped).
pub fn digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let at = out.len();
    out.resize(at + width, b'0');
    for slot in out.iter_mut().skip(at).rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
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
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(2000)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn civil_dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_764_806_400_123_456);
        assert_eq!(rfc3339_micros(t), "2025-12-04T00:00:00.123456Z");
    }
}
