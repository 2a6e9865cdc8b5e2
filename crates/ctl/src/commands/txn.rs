//! `txn`: a transaction read from standard input, in etcdctl's format:
//!
//! ```text
//! mod("key1") > "0"          <- compares, one per line
//!                            <- blank line
//! put key1 "overwrote-key1"  <- requests if every compare holds
//!                            <- blank line
//! put key1 "created-key1"    <- requests otherwise
//!                            <- blank line
//! ```
//!
//! A compare is `<target>("<key>") <op> "<value>"` with target `ver`/
//! `version`, `c`/`create`, `m`/`mod`, `val`/`value` or `lease` (a hex
//! id), and op `=`, `!=`, `<` or `>`. A request is a `put`, `get` or `del`
//! command line with its usual flags. Input that ends before the final
//! blank line is an error (`EOF`), as in etcdctl.

use std::io::BufRead;

use clap::{Args, Parser, Subcommand};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};

use super::kv::{delete_request, put_request, range_request, DelArgs, GetArgs, PutArgs};
use super::{emit, parse_i64, Context};
use crate::error::CtlError;

/// `txn [options]`.
#[derive(Args, Clone, Debug)]
pub struct TxnArgs {
    /// Input transaction in interactive mode.
    #[arg(short, long)]
    pub interactive: bool,
}

/// `txn`.
pub async fn txn(ctx: &Context, args: &TxnArgs) -> Result<(), CtlError> {
    let stdin = std::io::stdin();
    let req = read_txn(&mut stdin.lock(), args.interactive)?;
    let id = writes(&req).then(|| ctx.client.next_request_id());
    let resp = ctx.client.txn(req, id).await?;
    emit(&ctx.printer.txn(&resp)?)
}

/// Whether a txn may write, and so needs a request id.
fn writes(req: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(inner)) => writes(inner),
            _ => false,
        })
}

/// Parses a whole txn from `input`; prompts on stdout when `interactive`.
pub fn read_txn(input: &mut dyn BufRead, interactive: bool) -> Result<pb::TxnRequest, CtlError> {
    let prompt = |text: &str| -> Result<(), CtlError> {
        if interactive {
            emit(&format!("{text}\n"))?;
        }
        Ok(())
    };
    prompt("compares:")?;
    let compare = read_section(input)?
        .iter()
        .map(|line| parse_compare(line))
        .collect::<Result<Vec<_>, _>>()?;
    prompt("success requests (get, put, del):")?;
    let success = read_ops(input)?;
    prompt("failure requests (get, put, del):")?;
    let failure = read_ops(input)?;
    Ok(pb::TxnRequest {
        compare,
        success,
        failure,
    })
}

fn read_ops(input: &mut dyn BufRead) -> Result<Vec<pb::RequestOp>, CtlError> {
    read_section(input)?
        .iter()
        .map(|line| parse_op(line))
        .collect()
}

/// Trimmed lines up to the next blank one. Every line must end in a
/// newline: running out of input is `EOF`.
fn read_section(input: &mut dyn BufRead) -> Result<Vec<String>, CtlError> {
    let mut lines = Vec::new();
    loop {
        let mut raw = Vec::new();
        let read = input
            .read_until(b'\n', &mut raw)
            .map_err(|e| CtlError::invalid_input(e.to_string()))?;
        if read == 0 || raw.last() != Some(&b'\n') {
            return Err(CtlError::invalid_input("EOF"));
        }
        let line = String::from_utf8_lossy(&raw).trim().to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// One compare line.
pub fn parse_compare(line: &str) -> Result<pb::Compare, CtlError> {
    let malformed = || CtlError::invalid_input(format!("malformed comparison: {line}"));
    let Some((target, rest)) = line.split_once('(') else {
        return Err(malformed());
    };
    let mut scan = Scanner { rest };
    let key = scan.quoted().ok_or_else(malformed)?;
    if !scan.literal(")") {
        return Err(malformed());
    }
    let op = scan.word().ok_or_else(malformed)?;
    let value = scan.quoted().ok_or_else(malformed)?;
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => {
            return Err(CtlError::invalid_input(format!(
                "malformed comparison: {line} (unknown op {op})"
            )))
        }
    };
    let invalid = || CtlError::invalid_input(format!("invalid txn compare request: {line}"));
    let number = |base| parse_i64(&value, base).map_err(|_| invalid());
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number(10)?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number(10)?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number(10)?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(value.clone().into_bytes()),
        ),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number(16)?)),
        other => {
            return Err(CtlError::invalid_input(format!(
                "malformed comparison: {line} (unknown target {other})"
            )))
        }
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// Reads the pieces of a compare line, as Go's `Sscanf("%q) %s %q")`.
struct Scanner<'a> {
    rest: &'a str,
}

impl Scanner<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn literal(&mut self, text: &str) -> bool {
        match self.rest.strip_prefix(text) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let end = self
            .rest
            .find(char::is_whitespace)
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word.to_string())
    }

    fn quoted(&mut self) -> Option<String> {
        self.skip_space();
        let (value, used) = unquote_prefix(self.rest)?;
        self.rest = &self.rest[used..];
        Some(value)
    }
}

/// A Go-quoted string at the start of `text` (`"..."` with escapes, or a
/// raw `` `...` ``): its value and how many bytes it took.
fn unquote_prefix(text: &str) -> Option<(String, usize)> {
    let mut chars = text.char_indices();
    match chars.next()? {
        (_, '`') => {
            let end = text[1..].find('`')? + 1;
            Some((text[1..end].to_string(), end + 1))
        }
        (_, '"') => {
            let mut out = String::new();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return Some((out, i + 1)),
                    '\\' => {
                        let (_, escaped) = chars.next()?;
                        match escaped {
                            'n' => out.push('\n'),
                            't' => out.push('\t'),
                            'r' => out.push('\r'),
                            'a' => out.push('\u{7}'),
                            'b' => out.push('\u{8}'),
                            'f' => out.push('\u{c}'),
                            'v' => out.push('\u{b}'),
                            '\\' => out.push('\\'),
                            '"' => out.push('"'),
                            '\'' => out.push('\''),
                            'x' | 'u' | 'U' => {
                                let digits = match escaped {
                                    'x' => 2,
                                    'u' => 4,
                                    _ => 8,
                                };
                                let mut code = 0u32;
                                for _ in 0..digits {
                                    let (_, d) = chars.next()?;
                                    code = code * 16 + d.to_digit(16)?;
                                }
                                out.push(char::from_u32(code)?);
                            }
                            _ => return None,
                        }
                    }
                    c => out.push(c),
                }
            }
            None
        }
        _ => None,
    }
}

/// Splits a request line into words: double-quoted words with Go escapes,
/// single-quoted words taken literally, anything else up to whitespace.
pub fn argify(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (word, used) = if rest.starts_with('"') {
            unquote_prefix(rest).unwrap_or_else(|| {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (rest[..end].to_string(), end)
            })
        } else if let Some(stripped) = rest.strip_prefix('\'') {
            match stripped.find('\'') {
                Some(end) => (stripped[..end].to_string(), end + 2),
                None => (rest.to_string(), rest.len()),
            }
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (rest[..end].to_string(), end)
        };
        words.push(word);
        rest = rest[used..].trim_start();
    }
    words
}

/// A request line parsed with the same flags as the commands.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
struct OpLine {
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand, Debug)]
enum Op {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

/// One request line.
pub fn parse_op(line: &str) -> Result<pb::RequestOp, CtlError> {
    use pb::request_op::Request;
    let words = argify(line);
    if words.len() < 2 {
        return Err(CtlError::invalid_input(format!(
            "invalid txn compare request: {line}"
        )));
    }
    let invalid = || CtlError::invalid_input(format!("invalid txn request: {line}"));
    let parsed = OpLine::try_parse_from(&words).map_err(|e| {
        tracing::debug!(%e, "txn request line");
        invalid()
    })?;
    // A line that parses but makes no sense fails as the command itself
    // would (etcdctl runs the command's own checks, which end the process).
    let request = match parsed.op {
        Op::Put(args) => Request::RequestPut(put_request(&args, None)?),
        Op::Get(args) => Request::RequestRange(range_request(&args)?),
        Op::Del(args) => Request::RequestDeleteRange(delete_request(&args)?),
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_txn_reads_three_sections() {
        let input = "mod(\"k1\") > \"0\"\nvalue(\"k2\") != \"x y\"\n\nput t yes\nget k --prefix --limit=1\n\ndel k2 --prev-kv\n\n";
        let req = read_txn(&mut input.as_bytes(), false).unwrap();
        assert_eq!(req.compare.len(), 2);
        assert_eq!(
            req.compare[0].target_union,
            Some(TargetUnion::ModRevision(0))
        );
        assert_eq!(req.compare[0].result, CompareResult::Greater as i32);
        assert_eq!(
            req.compare[1].target_union,
            Some(TargetUnion::Value(b"x y".to_vec()))
        );
        assert_eq!(req.success.len(), 2);
        assert_eq!(req.failure.len(), 1);
        assert!(writes(&req));
    }

    #[test]
    fn malformed_input_fails_like_etcdctl() {
        assert_eq!(
            read_txn(&mut "".as_bytes(), false).unwrap_err().message,
            "EOF"
        );
        assert_eq!(
            read_txn(&mut "bogus\n\n\n".as_bytes(), false)
                .unwrap_err()
                .message,
            "malformed comparison: bogus"
        );
        let unterminated = read_txn(&mut "\nput a b\n".as_bytes(), false).unwrap_err();
        assert_eq!(unterminated.message, "EOF");
        assert_eq!(unterminated.code, crate::error::ExitCode::InvalidInput);
        assert_eq!(
            parse_op("frob a b").unwrap_err().message,
            "invalid txn request: frob a b"
        );
    }

    #[test]
    fn request_lines_honour_quotes() {
        assert_eq!(
            argify(r#"put x "hello world" 'a b'"#),
            vec!["put", "x", "hello world", "a b"]
        );
        let op = parse_op(r#"put x "hello world""#).unwrap();
        match op.request {
            Some(pb::request_op::Request::RequestPut(put)) => {
                assert_eq!(put.value, b"hello world")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn lease_compares_take_hex_ids() {
        let cmp = parse_compare(r#"lease("k") = "1f""#).unwrap();
        assert_eq!(cmp.target_union, Some(TargetUnion::Lease(0x1f)));
    }
}
