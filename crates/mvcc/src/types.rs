//! Plain Rust mirrors of etcd's KV request and response messages.
//!
//! These are not protobuf types: the server crate converts. Field meanings follow etcd's
//! `rpc.proto` and `kv.proto`. Revisions are `i64` like etcd's; `0` means "unset" where etcd
//! uses 0 that way.

/// One key at one revision, etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of puts since creation; 1 right after creation, 0 for a deleted key.
    pub version: i64,
    /// The value (empty for `keys_only` reads).
    pub value: Vec<u8>,
    /// Attached lease id, 0 for none.
    pub lease: i64,
}

/// Sort order of a range read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Default order (key ascending), unless a non-key target is set: then ascending.
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// Field a range read sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// Key bytes.
    #[default]
    Key,
    /// Version.
    Version,
    /// Create revision.
    Create,
    /// Mod revision.
    Mod,
    /// Value bytes.
    Value,
}

/// etcd's `RangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// End of range, see [`crate::KeyRange`] for the conventions.
    pub range_end: Vec<u8>,
    /// Maximum number of kvs returned, 0 = no limit.
    pub limit: i64,
    /// Revision to read at, `<= 0` = latest.
    pub revision: i64,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Keep only kvs with `mod_revision >= min_mod_revision` (0 = no filter).
    pub min_mod_revision: i64,
    /// Keep only kvs with `mod_revision <= max_mod_revision` (0 = no filter).
    pub max_mod_revision: i64,
    /// Keep only kvs with `create_revision >= min_create_revision` (0 = no filter).
    pub min_create_revision: i64,
    /// Keep only kvs with `create_revision <= max_create_revision` (0 = no filter).
    pub max_create_revision: i64,
}

/// etcd's `RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// Store revision when the read was served (not the revision read at, like etcd).
    pub revision: i64,
    /// The kvs, after filters, sort and limit.
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result.
    pub more: bool,
    /// Number of keys in the range, regardless of limit and filters.
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Lease to attach, 0 = none (detaches any previous lease).
    pub lease: i64,
    /// Return the previous kv.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist, `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist, `lease` must be 0).
    pub ignore_lease: bool,
}

/// etcd's `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// Store revision after the put.
    pub revision: i64,
    /// Previous kv, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// End of range, see [`crate::KeyRange`].
    pub range_end: Vec<u8>,
    /// Return the deleted kvs.
    pub prev_kv: bool,
}

/// etcd's `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// Store revision after the delete (unchanged when nothing was deleted).
    pub revision: i64,
    /// Number of keys deleted.
    pub deleted: i64,
    /// Deleted kvs, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// Comparison operator of a [`Compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    /// `==`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

/// What a [`Compare`] looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version.
    Version(i64),
    /// The key's create revision.
    Create(i64),
    /// The key's mod revision.
    Mod(i64),
    /// The key's value (always false on a missing key).
    Value(Vec<u8>),
    /// The key's lease.
    Lease(i64),
}

/// etcd's `Compare`: a condition of a txn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// Operator.
    pub result: CompareResult,
    /// Field and operand.
    pub target: CompareTarget,
    /// Key.
    pub key: Vec<u8>,
    /// With a range end, every key in the range must satisfy the compare.
    pub range_end: Vec<u8>,
}

/// etcd's `RequestOp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested txn.
    Txn(TxnRequest),
}

/// etcd's `ResponseOp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// Answer to a read.
    Range(RangeResponse),
    /// Answer to a put.
    Put(PutResponse),
    /// Answer to a delete.
    DeleteRange(DeleteRangeResponse),
    /// Answer to a nested txn.
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// Conditions, all must hold for `success` to run.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Ops run otherwise.
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Store revision after the txn.
    pub revision: i64,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per op of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// etcd's `HashKVResponse` without the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC32C over every stored key revision at or below `hash_revision`.
    pub hash: u32,
    /// The revision hashed up to.
    pub hash_revision: i64,
    /// The compaction revision when hashed; compare hashes only between equal values.
    pub compact_revision: i64,
}

/// Kind of an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A put.
    Put,
    /// A delete; the kv has the key and `mod_revision` = the delete revision.
    Delete,
}

/// One change, etcd's `mvccpb.Event`, as fed to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The kv after the change.
    pub kv: KeyValue,
    /// The kv before the change, if the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// The last raft entry applied to the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppliedIndex {
    /// Raft log index.
    pub index: u64,
    /// Raft term of that entry.
    pub term: u64,
}
