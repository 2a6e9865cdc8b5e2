//! `put`, `get`, `del` and `compaction`.
//!
//! The argument handling mirrors etcdctl's: the same flags, the same
//! defaults and the same error messages and exit codes for bad
//! combinations. `txn` reuses the request builders for its operation lines.

use clap::Args;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::range_request::{SortOrder, SortTarget};

use super::{emit, flagged_range, parse_i64, Context};
use crate::error::CtlError;
use crate::output::Format;

/// `put [options] <key> <value>` (value from stdin when omitted).
#[derive(Args, Clone, Debug, Default)]
pub struct PutArgs {
    /// The key, then the value.
    pub args: Vec<String>,
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// Return the previous key-value pair before modification.
    #[arg(long)]
    pub prev_kv: bool,
    /// Update the key using its current value.
    #[arg(long)]
    pub ignore_value: bool,
    /// Update the key using its current lease.
    #[arg(long)]
    pub ignore_lease: bool,
}

/// `get [options] <key> [range_end]`.
#[derive(Args, Clone, Debug)]
pub struct GetArgs {
    /// The key, and optionally the end of the range.
    pub args: Vec<String>,
    /// Linearizable(l) or Serializable(s).
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION.
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results.
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Get keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare.
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get only the keys.
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the count (with `-w fields`).
    #[arg(long)]
    pub count_only: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long)]
    pub print_value_only: bool,
}

/// `del [options] <key> [range_end]`.
#[derive(Args, Clone, Debug, Default)]
pub struct DelArgs {
    /// The key, and optionally the end of the range.
    pub args: Vec<String>,
    /// Delete keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Return deleted key-value pairs.
    #[arg(long)]
    pub prev_kv: bool,
    /// Delete keys that are greater than or equal to the given key using byte compare.
    #[arg(long)]
    pub from_key: bool,
}

/// `compaction [options] <revision>`.
#[derive(Args, Clone, Debug)]
pub struct CompactionArgs {
    /// The revision to compact up to.
    pub args: Vec<String>,
    /// Wait for the compaction to be physically applied.
    #[arg(long)]
    pub physical: bool,
}

/// The PutRequest etcdctl would send; `stdin` supplies the value when only
/// the key is given (`None` where there is no stdin to read, as in a txn).
pub fn put_request(
    args: &PutArgs,
    stdin: Option<&mut dyn std::io::Read>,
) -> Result<pb::PutRequest, CtlError> {
    let needs = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = args.args.first() else {
        return Err(CtlError::bad_args(needs));
    };
    let value = if args.ignore_value {
        if args.args.len() > 1 {
            return Err(CtlError::bad_args(
                "put command needs only 1 argument when 'ignore-value' is set.",
            ));
        }
        Vec::new()
    } else if let Some(value) = args.args.get(1) {
        value.clone().into_bytes()
    } else {
        let mut buf = Vec::new();
        if let Some(stdin) = stdin {
            stdin
                .read_to_end(&mut buf)
                .map_err(|_| CtlError::bad_args(needs))?;
        }
        if buf.is_empty() {
            return Err(CtlError::bad_args(needs));
        }
        buf
    };
    let lease = parse_i64(&args.lease, 16)
        .map_err(|e| CtlError::bad_args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(pb::PutRequest {
        key: key.clone().into_bytes(),
        value,
        lease,
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    })
}

/// The RangeRequest etcdctl would send.
pub fn range_request(args: &GetArgs) -> Result<pb::RangeRequest, CtlError> {
    let Some(first) = args.args.first() else {
        return Err(CtlError::bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    if args.prefix && args.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if args.keys_only && args.count_only {
        return Err(CtlError::bad_args(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        ));
    }
    let serializable = match args.consistency.as_str() {
        "l" => false,
        "s" => true,
        other => {
            return Err(CtlError::bad_feature(format!(
                "unknown consistency flag {}",
                crate::output::gofmt::quote(other.as_bytes())
            )))
        }
    };
    let key = first.clone().into_bytes();
    let mut range_end = Vec::new();
    if let Some(end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        range_end = end.clone().into_bytes();
    }
    let mut order = match args.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(CtlError::bad_feature(format!(
                "bad sort order {}",
                args.order
            )))
        }
    };
    let target = match args.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(CtlError::bad_feature(format!(
                "bad sort target {}",
                args.sort_by
            )))
        }
    };
    // Keys come back in ascending order anyway; asking for it explicitly
    // would make the server sort the whole range (etcd's client does the same).
    if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    let (key, range_end) = flagged_range(key, range_end, args.prefix, args.from_key);
    Ok(pb::RangeRequest {
        key,
        range_end,
        limit: args.limit,
        revision: args.rev.max(0),
        sort_order: order as i32,
        sort_target: target as i32,
        serializable,
        keys_only: args.keys_only,
        count_only: args.count_only,
        ..Default::default()
    })
}

/// The DeleteRangeRequest etcdctl would send.
pub fn delete_request(args: &DelArgs) -> Result<pb::DeleteRangeRequest, CtlError> {
    let Some(first) = args.args.first() else {
        return Err(CtlError::bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    };
    if args.prefix && args.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let key = first.clone().into_bytes();
    let mut range_end = Vec::new();
    if let Some(end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        range_end = end.clone().into_bytes();
    }
    let (key, range_end) = flagged_range(key, range_end, args.prefix, args.from_key);
    Ok(pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv: args.prev_kv,
    })
}

/// `put`.
pub async fn put(ctx: &Context, args: &PutArgs) -> Result<(), CtlError> {
    let mut stdin = std::io::stdin();
    let req = put_request(args, Some(&mut stdin as &mut dyn std::io::Read))?;
    let resp = ctx.client.put(req, ctx.client.next_request_id()).await?;
    emit(&ctx.printer.put(&resp)?)
}

/// `get`.
pub async fn get(ctx: &Context, args: &GetArgs) -> Result<(), CtlError> {
    let req = range_request(args)?;
    let resp = ctx.client.range(req).await?;
    let mut printer = ctx.printer;
    if args.count_only && printer.format != Format::Fields {
        return Err(CtlError::bad_args(
            "--count-only is only for `--write-out=fields`",
        ));
    }
    if args.print_value_only {
        if printer.format != Format::Simple {
            return Err(CtlError::bad_args(
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        printer.style.value_only = true;
    }
    emit(&printer.range(&resp)?)
}

/// `del`.
pub async fn del(ctx: &Context, args: &DelArgs) -> Result<(), CtlError> {
    let req = delete_request(args)?;
    let resp = ctx
        .client
        .delete_range(req, ctx.client.next_request_id())
        .await?;
    emit(&ctx.printer.delete(&resp)?)
}

/// `compaction`: prints `compacted revision N` whatever the format, as
/// etcdctl does.
pub async fn compaction(ctx: &Context, args: &CompactionArgs) -> Result<(), CtlError> {
    if args.args.len() != 1 {
        return Err(CtlError::bad_args("compaction command needs 1 argument"));
    }
    let revision = parse_i64(&args.args[0], 10).map_err(CtlError::failed)?;
    let req = pb::CompactionRequest {
        revision,
        physical: args.physical,
    };
    ctx.client
        .compact(req, ctx.client.next_request_id())
        .await?;
    emit(&format!("compacted revision {revision}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_args(args: &[&str]) -> GetArgs {
        GetArgs {
            args: args.iter().map(|s| s.to_string()).collect(),
            consistency: "l".into(),
            order: String::new(),
            sort_by: String::new(),
            limit: 0,
            prefix: false,
            from_key: false,
            rev: 0,
            keys_only: false,
            count_only: false,
            print_value_only: false,
        }
    }

    #[test]
    fn prefix_and_from_key_ranges() {
        let mut args = get_args(&["a"]);
        args.prefix = true;
        let req = range_request(&args).unwrap();
        assert_eq!((req.key, req.range_end), (b"a".to_vec(), b"b".to_vec()));
        let mut args = get_args(&[""]);
        args.prefix = true;
        let req = range_request(&args).unwrap();
        assert_eq!((req.key, req.range_end), (vec![0], vec![0]));
        let mut args = get_args(&["k"]);
        args.from_key = true;
        assert_eq!(range_request(&args).unwrap().range_end, vec![0]);
    }

    #[test]
    fn key_ascend_is_sent_as_no_order() {
        let mut args = get_args(&["a"]);
        args.order = "ascend".into();
        assert_eq!(
            range_request(&args).unwrap().sort_order,
            SortOrder::None as i32
        );
        args.sort_by = "modify".into();
        let req = range_request(&args).unwrap();
        assert_eq!(req.sort_order, SortOrder::Ascend as i32);
        assert_eq!(req.sort_target, SortTarget::Mod as i32);
        args.order = "sideways".into();
        let err = range_request(&args).unwrap_err();
        assert_eq!(err.message, "bad sort order sideways");
        assert_eq!(err.code, crate::error::ExitCode::BadFeature);
    }

    #[test]
    fn put_needs_a_value_or_stdin() {
        let args = PutArgs {
            args: vec!["k".into()],
            lease: "0".into(),
            ..Default::default()
        };
        let mut empty: &[u8] = b"";
        assert!(put_request(&args, Some(&mut empty)).is_err());
        let mut input: &[u8] = b"from stdin\n";
        assert_eq!(
            put_request(&args, Some(&mut input)).unwrap().value,
            b"from stdin\n"
        );
        let bad_lease = PutArgs {
            args: vec!["k".into(), "v".into()],
            lease: "zz".into(),
            ..Default::default()
        };
        assert_eq!(
            put_request(&bad_lease, None).unwrap_err().message,
            r#"bad lease ID (strconv.ParseInt: parsing "zz": invalid syntax), expecting ID in Hex"#
        );
    }
}
