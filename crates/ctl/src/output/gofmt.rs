//! Go's ways of writing values, which etcdctl's output is made of: `%q`
//! quoting, `time.Duration` strings, go-humanize byte sizes, `%016x` of a
//! signed id. Output has to match byte for byte, so these follow Go's rules
//! rather than Rust's.

use std::fmt::Write as _;
use std::time::Duration;

/// Go's `strconv.Quote` of the bytes read as a string: printable runes kept,
/// the usual backslash escapes, `\xNN` for bytes that are not UTF-8.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            quote_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn quote_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_go_printable(c) => out.push(c),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `unicode.IsPrint`: letters, marks, numbers,
/// punctuation, symbols and the ASCII space; not controls, other spaces,
/// format characters or private use.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let code = c as u32;
    let format_or_private = matches!(code,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x2028..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    !format_or_private && code != 0xfffe && code != 0xffff
}

/// etcdctl's `--hex` form: `\x` before every byte's two hex digits.
pub fn hex_prefixed(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4);
    for b in bytes {
        let _ = write!(out, "\\x{b:02x}");
    }
    out
}

/// Go's `%016x` of a signed 64-bit id (a lease id): zero-padded to 16,
/// with a minus sign counted in the width.
pub fn hex16(id: i64) -> String {
    if id < 0 {
        format!("-{:015x}", id.unsigned_abs())
    } else {
        format!("{id:016x}")
    }
}

/// Go's `time.Duration.String()`: `4.743775ms`, `850µs`, `1.5s`, `2m3s`.
pub fn duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let total_secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let hours = total_secs / 3600;
    let minutes = (total_secs % 3600) / 60;
    let secs = total_secs % 60;
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(
        out,
        "{}s",
        decimal(secs * 1_000_000_000 + frac, 1_000_000_000)
    );
    out
}

/// `value / unit` with the fraction's trailing zeros dropped.
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// go-humanize's `Bytes`: SI units, one decimal below 10 (`1.6 MB`,
/// `20 kB`, `7 B`).
pub fn humanize_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let exponent = ((size as f64).ln() / 1000f64.ln()).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let scaled = size as f64 / 1000f64.powi(exponent as i32);
    let value = (scaled * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{} {}", go_fixed(value, 1), UNITS[exponent])
    } else {
        format!("{} {}", go_fixed(value, 0), UNITS[exponent])
    }
}

/// Go's `%.Nf`, which rounds half to even on the exact binary value; Rust's
/// formatting does the same.
fn go_fixed(value: f64, places: usize) -> String {
    format!("{value:.places$}")
}

/// capnslog's time stamp, `2006-01-02 15:04:05.000000` (in UTC; etcd
/// writes local time, which is UTC on servers and CI).
pub fn capnslog_time(now: std::time::SystemTime) -> String {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's days-to-civil algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote(b"foo"), r#""foo""#);
        assert_eq!(quote(b"a\"b\\c\n\t"), r#""a\"b\\c\n\t""#);
        assert_eq!(quote(b"\x00\x7f"), r#""\x00\x7f""#);
        assert_eq!(quote(b"\xff"), r#""\xff""#);
        assert_eq!(quote("é€".as_bytes()), "\"é€\"");
        assert_eq!(quote("\u{200b}".as_bytes()), r#""\u200b""#);
    }

    #[test]
    fn hex_forms() {
        assert_eq!(hex_prefixed(b"k1"), r"\x6b\x31");
        assert_eq!(hex16(0x123), "0000000000000123");
        assert_eq!(hex16(-1), "-000000000000001");
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(duration(Duration::from_nanos(4_743_775)), "4.743775ms");
        assert_eq!(duration(Duration::from_nanos(45_458_935)), "45.458935ms");
        assert_eq!(duration(Duration::from_micros(850)), "850µs");
        assert_eq!(duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(duration(Duration::from_nanos(12)), "12ns");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_secs(123)), "2m3s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn sizes_print_as_go_humanize_does() {
        assert_eq!(humanize_bytes(7), "7 B");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(1_589_248), "1.6 MB");
        assert_eq!(humanize_bytes(25_000), "25 kB");
        assert_eq!(humanize_bytes(999), "999 B");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
    }

    #[test]
    fn capnslog_times_are_utc_dates_with_microseconds() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_796_646_864_859_152);
        assert_eq!(capnslog_time(at), "2026-12-07 12:34:24.859152");
        assert_eq!(
            capnslog_time(std::time::UNIX_EPOCH),
            "1970-01-01 00:00:00.000000"
        );
    }
}
