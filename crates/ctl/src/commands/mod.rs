//! The commands, one module per group, each a function from parsed
//! arguments to printed output: [`kv`] (put, get, del, compaction), [`txn`],
//! [`watch`], [`lease`], [`member`], [`endpoint`] (status, health) and
//! [`maintenance`] (alarm, defrag, snapshot save, move-leader), [`restore`]
//! (snapshot restore, offline), [`auth`] (auth, user and role), and
//! raftkv's own [`check`] of a recorded history.
//!
//! Argument checks and their messages follow etcdctl's, so a script that
//! matches on them keeps working.

pub mod auth;
pub mod check;
pub mod endpoint;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod member;
pub mod restore;
pub mod txn;
pub mod watch;

use std::io::Write as _;

use crate::client::Client;
use crate::error::CtlError;
use crate::output::Printer;

/// What every command needs.
pub struct Context {
    /// The connection.
    pub client: Client,
    /// The output format.
    pub printer: Printer,
}

/// Writes to stdout at once (a watch or keep-alive prints as it goes). A
/// closed stdout ends the command, as it does for any Unix filter.
pub fn emit(text: &str) -> Result<(), CtlError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CtlError::new(crate::error::ExitCode::Io, e.to_string()))
}

/// Writes raw bytes to stdout (`-w protobuf`).
pub fn emit_bytes(bytes: &[u8]) -> Result<(), CtlError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CtlError::new(crate::error::ExitCode::Io, e.to_string()))
}

/// Writes to stderr (etcdctl's per-endpoint failures and health lines).
pub fn emit_err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Go's `strconv.ParseInt(text, base, 64)`, with Go's error text.
pub fn parse_i64(text: &str, base: u32) -> Result<i64, String> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = parse_digits(digits, base)
        .map_err(|kind| format!("strconv.ParseInt: parsing {}: {kind}", go_quote(text)))?;
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    if magnitude > limit {
        return Err(format!(
            "strconv.ParseInt: parsing {}: value out of range",
            go_quote(text)
        ));
    }
    Ok(if negative {
        (magnitude as i64).wrapping_neg()
    } else {
        magnitude as i64
    })
}

/// Go's `strconv.ParseUint(text, base, 64)`, with Go's error text.
pub fn parse_u64(text: &str, base: u32) -> Result<u64, String> {
    parse_digits(text, base)
        .map_err(|kind| format!("strconv.ParseUint: parsing {}: {kind}", go_quote(text)))
}

fn parse_digits(digits: &str, base: u32) -> Result<u64, &'static str> {
    if digits.is_empty() {
        return Err("invalid syntax");
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    for c in digits.chars() {
        let d = c.to_digit(base).ok_or("invalid syntax")?;
        match value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
    }
    if overflow {
        Err("value out of range")
    } else {
        Ok(value)
    }
}

pub(crate) fn go_quote(text: &str) -> String {
    crate::output::gofmt::quote(text.as_bytes())
}

/// The end of the range holding every key that starts with `prefix`: the
/// prefix with its last byte below 0xff incremented and what follows it
/// dropped, or `\0` (every key) when there is no such byte.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcdctl's `--prefix` and `--from-key`: the key range they make of `key`
/// (and an explicit `range_end`, which they replace). An empty key means
/// every key, as `\0`.
pub fn flagged_range(
    mut key: Vec<u8>,
    mut range_end: Vec<u8>,
    prefix: bool,
    from_key: bool,
) -> (Vec<u8>, Vec<u8>) {
    if prefix {
        if key.is_empty() {
            key = vec![0];
            range_end = vec![0];
        } else {
            range_end = prefix_range_end(&key);
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        range_end = vec![0];
    }
    (key, range_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_with_go_messages() {
        assert_eq!(parse_i64("123", 16), Ok(0x123));
        assert_eq!(parse_i64("-5", 10), Ok(-5));
        assert_eq!(
            parse_i64("zz", 16),
            Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.to_string())
        );
        assert_eq!(
            parse_i64("ffffffffffffffff", 16),
            Err(r#"strconv.ParseInt: parsing "ffffffffffffffff": value out of range"#.to_string())
        );
        assert_eq!(parse_u64("ffffffffffffffff", 16), Ok(u64::MAX));
        assert_eq!(
            parse_u64("", 16),
            Err(r#"strconv.ParseUint: parsing "": invalid syntax"#.to_string())
        );
    }

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_range_end(b"a"), b"b");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }
}
