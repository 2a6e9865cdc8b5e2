//! The [`Store`]: opening, the apply path with its commit policy, and reads.
//!
//! # Durability and crash semantics
//!
//! Each [`Store::apply`] writes the data *and* the applied raft index/term in one redb write
//! transaction (shared with the batches before it while their commit is deferred, see below),
//! so the two can never disagree on disk. A batch should carry many raft
//! entries (everything committed since the last apply): that, not skipping fsyncs, is what
//! amortizes the commit cost.
//!
//! Every [`Config::durable_every_batches`]-th batch is an `Immediate` (fsynced) commit, and
//! so are [`Store::sync`], snapshot installs and [`Store::close`]; the batches in between
//! use redb's `Durability::None` (no fsync; the raft WAL already holds the entries). The
//! default is 1, every batch durable, because redb frees pages copied-on-write by
//! non-durable commits only lazily: in the benchmark, 170 batches of 1,000 random overwrites
//! on 100k keys grew the file to 2 GiB with 64 batches per fsync, against 129 MiB with
//! every batch fsynced, at about the same put rate. Raise it only where fsync is costly and
//! the disk has room.
//!
//! The pages of non-durable commits are not written back after every batch: with changes
//! appended by revision, the batches in between rewrite mostly the same few pages, and
//! writing them back after every batch cost 7-15% more CPU per put (alternating runs of 64
//! clients on 3 members: 4,741-5,446 against 5,311-6,363 puts/s). They are written back once
//! per durable commit.
//!
//! # Deferred commits
//!
//! Above one batch per durable commit, a batch that is not the durable one is not committed at
//! all when it is applied: its write transaction stays open, under the write gate, and the
//! next batch goes on in it. It is committed (without an fsync) by the first reader that comes
//! after it ([`Store::begin_read`]: every read path starts there, so a read still sees every
//! batch applied before it began), by [`Store::commit_applied`], or by the next durable
//! commit. redb copies every page a commit changes to a new place and frees the old one only
//! at a durable commit, so each commit wrote its own copies of the same few pages (nine per
//! one-put batch: the `kvs` leaf and branches, `meta`, redb's table and free-page trees): at
//! one client, 130 KiB of disk writes per put over three members against etcd's 20 KiB, and
//! 35 KiB with the commits deferred. A
//! batch with a compaction is committed at once, so the key index drops revisions only
//! after the commit that drops them (see the `index` module).
//!
//! Applied batches that are not committed exist only in the open transaction and in the raft
//! log. If that transaction is lost (a failed commit, a failed batch in it, a panic) the
//! store refuses every later batch ([`MvccError::UncommittedLost`]): the member must stop and
//! replay the log from the last commit, as after a crash.
//!
//! A server need not make the durable commit on the applying thread: [`crate::BackgroundSync`]
//! makes it on its own, writing the pages back first without shutting writers out, and
//! `durable_every_batches` is then only the backstop for when that thread falls behind.
//!
//! After a crash, redb reopens at the last durable commit: the data and the applied index of
//! that moment, exactly. Every batch after it is lost *together with* its applied index, so
//! the node replays the raft log from `applied_index() + 1` and reaches the same state; an
//! entry at or below the applied index is skipped by [`crate::Batch::begin_entry`] and never
//! applied twice. Contract for the caller: the raft log may be truncated only up to the index
//! returned by [`Store::sync`] (the durable applied index), never up to a merely applied one.
//! (With the default of one fsync per batch the two are the same.) Reopening after an
//! unclean shutdown makes redb verify and repair the file, which walks all of it: seconds
//! per GiB.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadOnlyTable, ReadableTable};

use crate::batch::{meta_get, to_rev, Batch};
use crate::error::{MvccError, Result};
use crate::index::KeyIndex;
use crate::key_range::KeyRange;
use crate::layout::{
    ValuesKey, KVS, LAYOUT_VERSION, LAYOUT_WHOLE_VALUES, LEASES, LEASE_KEYS, META,
    META_APPLIED_INDEX, META_APPLIED_TERM, META_COMPACT, META_INSTALLS, META_LAYOUT, META_REV,
    VALUES,
};
use crate::read::{read_index, KvsKey, View};
use crate::types::{
    AppliedIndex, HashKv, KeyValue, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

/// Settings of a [`Store`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Path of the redb file (created if missing).
    pub path: PathBuf,
    /// Most compares or ops in one level of a txn (etcd's `--max-txn-ops`, default 128).
    pub max_txn_ops: usize,
    /// Every this many batches, one commit is fsynced (default 1: every batch). Above 1, the
    /// batches in between are not fsynced, and their commits are deferred to the next read
    /// (see the module doc): less I/O, a longer replay after a crash, and a larger file (redb
    /// frees pages of non-durable commits lazily).
    pub durable_every_batches: u64,
    /// redb page cache size in bytes (default 256 MiB).
    pub cache_size_bytes: usize,
}

impl Config {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Config {
        Config {
            path: path.into(),
            max_txn_ops: 128,
            durable_every_batches: 1,
            cache_size_bytes: 256 << 20,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.max_txn_ops == 0 {
            return Err(MvccError::Config("max_txn_ops must be > 0".into()));
        }
        if self.durable_every_batches == 0 {
            return Err(MvccError::Config(
                "durable_every_batches must be > 0".into(),
            ));
        }
        if self.cache_size_bytes < (1 << 20) {
            return Err(MvccError::Config(
                "cache_size_bytes must be >= 1 MiB".into(),
            ));
        }
        Ok(())
    }
}

type ReadKvs = ReadOnlyTable<KvsKey, &'static [u8]>;
type ReadValues = ReadOnlyTable<ValuesKey, &'static [u8]>;

/// Read-only tables of one redb read transaction.
pub(crate) struct ReadTables {
    pub kvs: ReadKvs,
    pub values: ReadValues,
    pub current: i64,
    pub compact: i64,
    pub installs: u64,
    pub applied: AppliedIndex,
}

impl ReadTables {
    pub(crate) fn view<'a>(&'a self, index: &'a RwLock<KeyIndex>) -> View<'a, ReadKvs, ReadValues> {
        View {
            kvs: &self.kvs,
            values: &self.values,
            index,
            current: self.current,
            compact: self.compact,
            installs: self.installs,
        }
    }
}

/// Times a read starts again on a fresh transaction after [`MvccError::ReadRaced`].
const READ_ATTEMPTS: usize = 4;

/// The MVCC key-value store. `Send + Sync`: reads may run from any thread while one thread
/// applies; writers (apply, sync, install, the swap at the end of a defragmentation) are
/// serialized by the store's write gate.
pub struct Store {
    /// The open database. Behind a lock only so [`Store::defragment`] can swap in a rebuilt
    /// file; every other user clones the `Arc` and lets go of the lock at once. A read
    /// transaction begun on a replaced database stays valid (redb keeps the file open for
    /// it), so reads that straddle a swap still see one consistent state.
    db: RwLock<Arc<Database>>,
    /// Every key's revisions (see the `index` module). Written under the write gate only.
    pub(crate) index: RwLock<KeyIndex>,
    /// Set while a batch runs, cleared once the index matches the file again: still set
    /// when the next batch starts, it makes that batch rebuild the index first.
    index_suspect: AtomicBool,
    pub(crate) config: Config,
    batches_since_durable: AtomicU64,
    /// Held by every writer for the whole of its transaction, and by a defragmentation
    /// while it checks for (or shuts out) concurrent writes and swaps the file. It holds the
    /// write transaction of the batches applied but not yet committed, if any (see "Deferred
    /// commits" in the module doc).
    write_gate: Mutex<Option<redb::WriteTransaction>>,
    /// Whether the gate holds such a transaction: lets a reader skip the gate when not.
    has_pending: AtomicBool,
    /// Set while applied batches exist only in a transaction taken out of the gate, and left
    /// set if that transaction was lost: every later batch is then refused.
    pending_lost: AtomicBool,
    /// Bumped by every commit that changes the content (apply, install), under the gate:
    /// a defragmentation copied without stopping writers is valid only if it did not move.
    generation: AtomicU64,
    /// One defragmentation at a time.
    pub(crate) defrag_gate: Mutex<()>,
    commit_observer: std::sync::OnceLock<CommitObserver>,
    /// The file's length and occupied bytes, and when they were measured (see
    /// [`Store::occupied_bytes`]).
    file_bytes: Mutex<Option<(Instant, (u64, u64))>>,
}

/// How old a measure [`Store::file_bytes`] and [`Store::occupied_bytes`] may answer with.
pub const FILE_BYTES_MAX_AGE: Duration = Duration::from_millis(10);

/// Locks one of the store's gates. Poisoning is ignored: the defragmentation gate guards no
/// data, and a panic with the write gate held either left its transaction in the gate, or
/// took it out, and then `pending_lost` says what it lost.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The write gate, held: the transaction of applied batches not yet committed, if any.
pub(crate) type WriteGate<'a> = MutexGuard<'a, Option<redb::WriteTransaction>>;

/// Told how long each write-transaction commit of [`Store::apply`] and [`Store::sync`]
/// took (fsync included when the commit is durable), for a server's latency metrics.
/// Called on the committing thread: it must be quick and must not call back into the store.
pub type CommitObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

impl Store {
    /// Opens (or creates) the store. A new store is at revision 1 with applied index 0.
    pub fn open(config: Config) -> Result<Store> {
        config.validate()?;
        crate::rebuild::remove_leftovers(&config.path)?;
        let db = Database::builder()
            .set_cache_size(config.cache_size_bytes)
            .create(&config.path)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            if meta.get(META_REV)?.is_none() {
                meta.insert(META_REV, 1)?;
                meta.insert(META_COMPACT, 0)?;
                meta.insert(META_APPLIED_INDEX, 0)?;
                meta.insert(META_APPLIED_TERM, 0)?;
                meta.insert(META_LAYOUT, LAYOUT_VERSION)?;
                meta.insert(META_INSTALLS, 0)?;
            }
            // Files of layout 1 had no version record.
            let found = meta_get(&meta, META_LAYOUT)?.max(1);
            if found == LAYOUT_WHOLE_VALUES {
                // Its records are all whole, which layout 3 reads as they are; marked 3 so
                // that an older version, which cannot read split values, refuses the file.
                meta.insert(META_LAYOUT, LAYOUT_VERSION)?;
                tracing::info!(
                    from = found,
                    to = LAYOUT_VERSION,
                    "mvcc store: layout upgraded (large values are split from now on)"
                );
            } else if found != LAYOUT_VERSION {
                return Err(MvccError::Layout {
                    found,
                    expected: LAYOUT_VERSION,
                });
            }
            txn.open_table(KVS)?;
            txn.open_table(VALUES)?;
            txn.open_table(LEASES)?;
            txn.open_table(LEASE_KEYS)?;
            txn.open_table(crate::layout::AUX)?;
        }
        txn.commit()?;
        let store = Store {
            db: RwLock::new(Arc::new(db)),
            index: RwLock::new(KeyIndex::default()),
            index_suspect: AtomicBool::new(false),
            config,
            batches_since_durable: AtomicU64::new(0),
            write_gate: Mutex::new(None),
            has_pending: AtomicBool::new(false),
            pending_lost: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            defrag_gate: Mutex::new(()),
            commit_observer: std::sync::OnceLock::new(),
            file_bytes: Mutex::new(None),
        };
        let started = std::time::Instant::now();
        store.rebuild_index()?;
        let t = store.read_tables()?;
        tracing::info!(
            path = %store.config.path.display(),
            revision = t.current,
            compact_revision = t.compact,
            applied_index = t.applied.index,
            keys = read_index(&store.index).len(),
            index_built_in = ?started.elapsed(),
            "mvcc store opened"
        );
        Ok(store)
    }

    /// Builds the key index anew from the last commit: at open, after an install, and after
    /// a batch that changed the index was not committed.
    pub(crate) fn rebuild_index(&self) -> Result<()> {
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        // Never with batches left uncommitted: at open, and under the gate in `apply`, whose
        // transaction is out of the gate by then (committed, or lost and refused from then on).
        let t = Self::tables_in(&self.db().begin_read()?)?;
        *index = KeyIndex::build(&t.kvs, t.compact, t.installs)?;
        Ok(())
    }

    /// Runs a read on a fresh transaction, again if it raced a compaction or an install.
    fn read<T>(&self, f: impl Fn(&View<'_, ReadKvs, ReadValues>) -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            let t = self.read_tables()?;
            match f(&t.view(&self.index)) {
                Err(MvccError::ReadRaced) if attempt < READ_ATTEMPTS => attempt += 1,
                r => return r,
            }
        }
    }

    /// Sets the observer of commit durations; only the first call takes effect.
    pub fn set_commit_observer(&self, observer: CommitObserver) {
        let _ = self.commit_observer.set(observer);
    }

    /// Commits `txn`, telling the observer how long it took.
    fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        let started = std::time::Instant::now();
        txn.commit()?;
        if let Some(observe) = self.commit_observer.get() {
            observe(started.elapsed());
        }
        Ok(())
    }

    /// The config the store was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database in use now.
    pub(crate) fn db(&self) -> Arc<Database> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the database (defragmentation); the caller holds the write gate.
    pub(crate) fn swap_db(&self, fresh: Database) {
        let mut db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *db = Arc::new(fresh);
        self.batches_since_durable.store(0, Ordering::Release);
        // The file shrank: the next quota check must see it.
        *self
            .file_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Shuts writers out until the guard is dropped.
    pub(crate) fn write_gate(&self) -> WriteGate<'_> {
        lock(&self.write_gate)
    }

    /// Takes the transaction of uncommitted batches out of the gate. Until it is committed
    /// (see [`Store::settle`]), those batches are nowhere else in the store.
    fn take_pending(&self, gate: &mut WriteGate<'_>) -> Option<redb::WriteTransaction> {
        let txn = gate.take();
        if txn.is_some() {
            self.pending_lost.store(true, Ordering::Release);
        }
        txn
    }

    /// Records that every applied batch is committed.
    fn settle(&self) {
        self.has_pending.store(false, Ordering::Release);
        self.pending_lost.store(false, Ordering::Release);
    }

    /// Refuses to go on once applied batches were lost before their commit.
    fn check_not_lost(&self) -> Result<()> {
        if self.pending_lost.load(Ordering::Acquire) {
            return Err(MvccError::UncommittedLost);
        }
        Ok(())
    }

    /// Commits the batches applied but not yet committed, if any (no fsync); the caller holds
    /// the gate.
    pub(crate) fn commit_pending(&self, gate: &mut WriteGate<'_>) -> Result<()> {
        self.check_not_lost()?;
        let Some(txn) = self.take_pending(gate) else {
            return Ok(());
        };
        self.commit(txn)?;
        self.settle();
        Ok(())
    }

    /// Commits every applied batch (without an fsync), so that it is in the file and seen by
    /// read transactions that begin from now on. Reads through the store do this themselves;
    /// [`crate::BackgroundSync`] calls it before writing the file back.
    pub fn commit_applied(&self) -> Result<()> {
        if self.has_pending.load(Ordering::Acquire) {
            self.commit_pending(&mut self.write_gate())?;
        }
        Ok(())
    }

    /// Begins a read transaction that sees every batch applied before the call. Every read of
    /// the store begins here (or at [`Store::begin_read_gated`]).
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.commit_applied()?;
        Ok(self.db().begin_read()?)
    }

    /// [`Store::begin_read`] for a caller that holds the write gate.
    pub(crate) fn begin_read_gated(
        &self,
        gate: &mut WriteGate<'_>,
    ) -> Result<redb::ReadTransaction> {
        self.commit_pending(gate)?;
        Ok(self.db().begin_read()?)
    }

    /// How many content-changing commits were made (read under the write gate to be exact).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records a content-changing commit; called with the write gate held.
    pub(crate) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Applies one batch of raft entries in one redb transaction. `f` calls
    /// [`Batch::begin_entry`] for each entry and then its requests; request errors returned by
    /// the batch methods answer that request only and the batch goes on. Returning `Err` from
    /// `f` discards the whole batch, and so does any fatal (storage) error, even if `f`
    /// swallowed it.
    pub fn apply<R>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<R>) -> Result<R> {
        let mut gate = self.write_gate();
        self.check_not_lost()?;
        if self.index_suspect.load(Ordering::Acquire) {
            // A batch before this one ended without its index changes undone (a panic in
            // it, or a rebuild that failed): its revisions would be handed out again.
            self.rebuild_index()?;
        }
        self.index_suspect.store(true, Ordering::Release);
        let n = self.batches_since_durable.fetch_add(1, Ordering::AcqRel) + 1;
        let durable = n >= self.config.durable_every_batches;
        // The batches applied since the last commit, if any, go on in the same transaction.
        let carried = self.take_pending(&mut gate);
        let carried_batches = carried.is_some();
        let mut txn = match carried {
            Some(txn) => txn,
            None => self.db().begin_write()?,
        };
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        let (out, index_changed, compacted_to) = {
            let mut batch = Batch::open(&txn, &self.index, self.config.max_txn_ops)?;
            let out = f(&mut batch);
            let (index_changed, compacted_to) = (batch.index_changed, batch.compacted_to);
            let out = match out {
                Ok(out) => batch.finish().map(|()| out),
                Err(e) => Err(e),
            };
            (out, index_changed, compacted_to)
        };
        // A compaction is committed at once: the index drops revisions only after that.
        let commit_now = durable || compacted_to.is_some();
        let out = match out {
            Ok(out) if commit_now => self.commit(txn).map(|()| out),
            Ok(out) => {
                *gate = Some(txn);
                self.has_pending.store(true, Ordering::Release);
                Ok(out)
            }
            Err(e) => txn.abort().map_err(MvccError::from).and(Err(e)),
        };
        if out.is_ok() {
            self.settle_unless_pending(&gate);
        }
        let index_matches_disk = if out.is_err() && (index_changed || carried_batches) {
            // The index holds changes that are not on disk; make it match the disk again.
            // (Batches carried in the transaction are lost with it: `pending_lost` stays
            // set and refuses every later batch.)
            match self.rebuild_index() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "mvcc store: key index not rebuilt after a failed batch");
                    false
                }
            }
        } else {
            true
        };
        if index_matches_disk {
            self.index_suspect.store(false, Ordering::Release);
        }
        match out {
            Ok(out) => {
                if let Some(rev) = compacted_to {
                    self.index
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .compact(rev);
                }
                self.bump_generation();
                if durable {
                    self.batches_since_durable.store(0, Ordering::Release);
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// After a batch that succeeded: clears the marks of uncommitted batches if it committed
    /// them, or only the lost mark if it left them in the gate.
    fn settle_unless_pending(&self, gate: &WriteGate<'_>) {
        if gate.is_some() {
            self.pending_lost.store(false, Ordering::Release);
        } else {
            self.settle();
        }
    }

    /// Makes every applied batch durable (one fsynced commit) and returns the applied index,
    /// which is from now on safe to truncate the raft log up to.
    pub fn sync(&self) -> Result<AppliedIndex> {
        let mut gate = self.write_gate();
        self.check_not_lost()?;
        let mut txn = match self.take_pending(&mut gate) {
            Some(txn) => txn,
            None => self.db().begin_write()?,
        };
        txn.set_durability(Durability::Immediate);
        let applied = {
            let meta = txn.open_table(META)?;
            AppliedIndex {
                index: meta_get(&meta, META_APPLIED_INDEX)?,
                term: meta_get(&meta, META_APPLIED_TERM)?,
            }
        };
        self.commit(txn)?;
        self.settle();
        self.batches_since_durable.store(0, Ordering::Release);
        Ok(applied)
    }

    /// How many batches were committed since the last durable commit.
    pub fn batches_since_durable(&self) -> u64 {
        self.batches_since_durable.load(Ordering::Acquire)
    }

    /// Has the OS write the file's cached pages to disk (an fdatasync through a descriptor of
    /// its own), without shutting writers out. Promises nothing about what a crash keeps:
    /// redb's header still names the last durable commit. It only leaves the next durable
    /// commit less to flush while it holds the write gate (see [`crate::BackgroundSync`]).
    ///
    /// A file that cannot be opened (out of descriptors, say) is skipped with a warning. An
    /// error of the fdatasync itself is the disk's, and the kernel may report it to one
    /// descriptor only: the caller must take it as a failed durable commit.
    pub fn write_back(&self) -> std::io::Result<()> {
        let file = match std::fs::File::open(&self.config.path) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(error = %e, "mvcc store: file not opened for write-back; skipped");
                return Ok(());
            }
        };
        file.sync_data()
    }

    /// Syncs and closes the store.
    pub fn close(self) -> Result<AppliedIndex> {
        self.sync()
    }

    pub(crate) fn read_tables(&self) -> Result<ReadTables> {
        Self::tables_in(&self.begin_read()?)
    }

    pub(crate) fn tables_in(txn: &redb::ReadTransaction) -> Result<ReadTables> {
        let meta = txn.open_table(META)?;
        Ok(ReadTables {
            kvs: txn.open_table(KVS)?,
            values: txn.open_table(VALUES)?,
            current: to_rev(meta_get(&meta, META_REV)?)?,
            compact: to_rev(meta_get(&meta, META_COMPACT)?)?,
            installs: meta_get(&meta, META_INSTALLS)?,
            applied: AppliedIndex {
                index: meta_get(&meta, META_APPLIED_INDEX)?,
                term: meta_get(&meta, META_APPLIED_TERM)?,
            },
        })
    }

    /// The last applied raft entry (as of the last commit, durable or not).
    pub fn applied_index(&self) -> Result<AppliedIndex> {
        Ok(self.read_tables()?.applied)
    }

    /// The current store revision (1 for an empty store).
    pub fn current_revision(&self) -> Result<i64> {
        Ok(self.read_tables()?.current)
    }

    /// The compaction revision (0 before any compaction).
    pub fn compact_revision(&self) -> Result<i64> {
        Ok(self.read_tables()?.compact)
    }

    /// etcd's Range, served from a consistent snapshot of the last commit.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.read(|view| view.range(req))
    }

    /// The kv of one key at the latest revision.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.read(|view| view.get_latest(key, true))
    }

    /// The changes at revisions `>= start_revision` to keys of `(key, range_end)`, in revision
    /// order, at most `limit` of them (0 = no limit), with `prev_kv` filled (when still in
    /// history). `start_revision` at or below the compaction revision gives
    /// [`MvccError::Compacted`] (stricter than etcd by one revision: deletes at the compaction
    /// revision itself are gone), above the current one an empty list.
    pub fn events(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
        limit: usize,
    ) -> Result<Vec<crate::types::Event>> {
        let range = KeyRange::new(key, range_end);
        self.read(|view| {
            let mut out = Vec::new();
            scan_events(view, start_revision, &range, true, |event| {
                if let Some(event) = event {
                    out.push(event);
                }
                limit == 0 || out.len() < limit
            })?;
            Ok(out)
        })
    }

    /// A page of history for a watcher that fell behind: the changes to keys of `range` from
    /// `start_revision`, in whole revisions, ending at the first revision boundary after
    /// `limits` is reached (so one revision larger than the limits still comes whole), and the
    /// revision the next page starts at. The same errors as [`Store::events`].
    pub fn event_page(
        &self,
        start_revision: i64,
        range: &KeyRange,
        limits: EventPageLimits,
    ) -> Result<EventPage> {
        self.read(|view| {
            let mut events: Vec<crate::types::Event> = Vec::new();
            let mut bytes = 0usize;
            let mut last_revision = start_revision;
            let mut next_revision = view.current + 1;
            scan_events(view, start_revision, range, limits.prev_kv, |event| {
                let Some(event) = event else {
                    return true;
                };
                let revision = event.kv.mod_revision;
                let full = events.len() >= limits.max_events || bytes >= limits.max_bytes;
                if full && revision > last_revision {
                    next_revision = revision;
                    return false;
                }
                bytes += event_bytes(&event);
                last_revision = revision;
                events.push(event);
                true
            })?;
            Ok(EventPage {
                events,
                next_revision,
            })
        })
    }

    /// A read-only txn (only range ops), served without a new revision; a txn with a write
    /// gives [`MvccError::NotReadOnly`].
    pub fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse> {
        self.read(|view| {
            let mut resp = crate::txn::read_txn(view, req, self.config.max_txn_ops)?;
            resp.revision = view.current;
            Ok(resp)
        })
    }

    /// etcd's HashKV: CRC32C over every stored (revision, record) at or below `revision`
    /// (`<= 0` = current), in revision order. Two stores with the same history and the same
    /// compaction revision hash equal.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv> {
        let t = self.read_tables()?;
        let rev = if revision <= 0 { t.current } else { revision };
        if rev > t.current {
            return Err(MvccError::FutureRev);
        }
        if rev < t.compact {
            return Err(MvccError::Compacted);
        }
        let mut h = 0u32;
        for e in t.kvs.range(..=(rev, i64::MAX))? {
            let (k, v) = e?;
            let (main, sub) = k.value();
            h = crc32c::crc32c_append(h, &main.to_le_bytes());
            h = crc32c::crc32c_append(h, &sub.to_le_bytes());
            // The whole record, so members hash equal whatever layout their files have.
            h = crc32c::crc32c_append(
                h,
                &crate::layout::whole_record(&t.values, (main, sub), v.value())?,
            );
        }
        Ok(HashKv {
            hash: h,
            hash_revision: rev,
            compact_revision: t.compact,
        })
    }

    /// All granted leases as (id, ttl seconds), by id.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(LEASES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }

    /// The keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(LEASE_KEYS)?;
        let lo: (i64, &[u8]) = (id, &[]);
        let mut out = Vec::new();
        for e in t.range(lo..)? {
            let (k, _) = e?;
            let (lease, key) = k.value();
            if lease != id {
                break;
            }
            out.push(key.to_vec());
        }
        Ok(out)
    }

    /// Every kv of `(key, range_end)` at `revision` (`<= 0` = latest), in key order, without
    /// limit: a convenience over [`Store::range`].
    pub fn scan(&self, key: &[u8], range_end: &[u8], revision: i64) -> Result<Vec<KeyValue>> {
        self.read(|view| {
            let rev = view.resolve_rev(revision)?;
            let mut out = Vec::new();
            view.for_each(&KeyRange::new(key, range_end), rev, true, |kv| {
                out.push(kv);
                Ok(())
            })?;
            Ok(out)
        })
    }
}

/// Space used by the store on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Length of the redb file: Status's `dbSize`. redb doubles it whenever it runs out of
    /// pages (up to 4 GiB), so up to half of it may be a hole never written.
    pub file_bytes: u64,
    /// What the file occupies on disk (see [`Store::occupied_bytes`]): what the quota
    /// measures.
    pub occupied_bytes: u64,
    /// Bytes of the pages the tables use (their stored, metadata and fragmented bytes
    /// together: redb counts a page's whole allocation in them): Status's `dbSizeInUse`.
    pub in_use_bytes: u64,
    /// Bytes of keys and values stored in all tables.
    pub stored_bytes: u64,
    /// B-tree overhead (page headers, branch pages).
    pub metadata_bytes: u64,
    /// Unused space inside allocated pages.
    pub fragmented_bytes: u64,
}

/// The file's length and the bytes of disk it occupies (its blocks, never more than its
/// length).
pub(crate) fn measure_file(path: &std::path::Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.len(), m.blocks().saturating_mul(512).min(m.len())))
}

impl Store {
    /// Length of the store's file. Measured at most every [`FILE_BYTES_MAX_AGE`] (see
    /// [`Store::occupied_bytes`]).
    pub fn file_bytes(&self) -> Result<u64> {
        Ok(self.measured()?.0)
    }

    /// The bytes of disk the store's file occupies: the pages redb has written, in use or
    /// free for reuse, without the hole at its end. This is what the backend quota
    /// measures, as etcd's measures bbolt's high-water mark of pages (`tx.Size()`) rather
    /// than its file: redb doubles its file whenever it runs out of pages, so the length of
    /// a file of 1,028 MiB of pages is 2,056 MiB (issue 16), while the half never written
    /// is a hole that takes no disk. On a file system without holes the two are the same,
    /// and the quota is as strict as the length.
    ///
    /// Why not redb's count of allocated pages: only a write transaction's `stats()` has
    /// it, and that walks every tree: 333 ms (619 ms cold) for a store of 311 MiB, against
    /// one `stat` here, while the two differed by 0.1 MiB on that store
    /// (`examples/store_size.rs`). Pages freed by a compaction stay counted until a
    /// defragmentation, as in etcd; redb reuses them before it writes new ones.
    ///
    /// Measured at most every [`FILE_BYTES_MAX_AGE`]: every write request asks (the quota
    /// check), and a stat each was 1.5% of the CPU of a put under load. (etcd's own figure
    /// trails its backend commits, which come every 100 ms.)
    pub fn occupied_bytes(&self) -> Result<u64> {
        Ok(self.measured()?.1)
    }

    fn measured(&self) -> Result<(u64, u64)> {
        let mut cached = self
            .file_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, sizes)) = *cached {
            if at.elapsed() < FILE_BYTES_MAX_AGE {
                return Ok(sizes);
            }
        }
        let sizes = measure_file(&self.config.path)?;
        *cached = Some((Instant::now(), sizes));
        Ok(sizes)
    }

    /// Space used on disk, per redb's table statistics.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        use redb::ReadableTableMetadata;
        let txn = self.begin_read()?;
        let (file_bytes, occupied_bytes) = measure_file(&self.config.path)?;
        let mut u = DiskUsage {
            file_bytes,
            occupied_bytes,
            ..DiskUsage::default()
        };
        let mut add = |s: redb::TableStats| {
            u.in_use_bytes += s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes();
            u.stored_bytes += s.stored_bytes();
            u.metadata_bytes += s.metadata_bytes();
            u.fragmented_bytes += s.fragmented_bytes();
        };
        add(txn.open_table(KVS)?.stats()?);
        add(txn.open_table(VALUES)?.stats()?);
        add(txn.open_table(LEASES)?.stats()?);
        add(txn.open_table(LEASE_KEYS)?.stats()?);
        add(txn.open_table(META)?.stats()?);
        add(txn.open_table(crate::layout::AUX)?.stats()?);
        Ok(u)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.batches_since_durable.load(Ordering::Acquire) > 0 {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "mvcc store: final sync failed; replay will redo it");
            }
        }
    }
}

/// Every record of `namespace` in an aux table, in key order.
pub(crate) fn scan_aux<T>(table: &T, namespace: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>>
where
    T: redb::ReadableTable<(&'static str, &'static [u8]), &'static [u8]>,
{
    let mut out = Vec::new();
    for item in table.range::<(&str, &[u8])>((namespace, &[][..])..)? {
        let (k, v) = item?;
        let (ns, key) = k.value();
        if ns != namespace {
            break;
        }
        out.push((key.to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

impl Store {
    /// Every server record of `namespace`, as last committed.
    pub fn aux_scan(&self, namespace: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.begin_read()?;
        scan_aux(&txn.open_table(crate::layout::AUX)?, namespace)
    }
}

/// Limits of one [`Store::event_page`].
#[derive(Clone, Copy, Debug)]
pub struct EventPageLimits {
    /// Events after which the page ends at the next revision boundary.
    pub max_events: usize,
    /// Bytes of keys and values (the events' and their `prev_kv`'s) after which the page ends
    /// at the next revision boundary.
    pub max_bytes: usize,
    /// Fill each event's `prev_kv` (a read of the record each change replaced).
    pub prev_kv: bool,
}

/// One page of history: see [`Store::event_page`].
#[derive(Clone, Debug, Default)]
pub struct EventPage {
    /// The changes, in revision order.
    pub events: Vec<crate::types::Event>,
    /// Where the next page starts: the first revision not read, or one past the current
    /// revision when the page reached the end of history.
    pub next_revision: i64,
}

/// What an event holds in keys and values.
fn event_bytes(event: &crate::types::Event) -> usize {
    let kv = |kv: &KeyValue| kv.key.len() + kv.value.len();
    kv(&event.kv) + event.prev_kv.as_ref().map_or(0, kv)
}

/// Walks the changes at revisions `>= start_revision` in revision order, handing `visit` each
/// change to a key of `range` (and `None` for a change to any other key, so a page can end at
/// a revision boundary), until it returns false.
fn scan_events(
    view: &View<'_, ReadKvs, ReadValues>,
    start_revision: i64,
    range: &KeyRange,
    with_prev_kv: bool,
    mut visit: impl FnMut(Option<crate::types::Event>) -> bool,
) -> Result<()> {
    use crate::types::{Event, EventKind};
    if start_revision <= view.compact {
        return Err(MvccError::Compacted);
    }
    for e in view.kvs.range((start_revision, i64::MIN)..)? {
        let (k, v) = e?;
        let (main, sub) = k.value();
        let record = v.value();
        let (key, _) = crate::layout::record_key(record)?;
        if !range.contains(key) {
            if !visit(None) {
                break;
            }
            continue;
        }
        let prev_kv = match with_prev_kv.then(|| view.index()).transpose()? {
            Some(index) => match index.before(key, main, sub) {
                Some(c) if !c.tombstone => Some(view.fetch(c.main, c.sub, true)?),
                _ => None,
            },
            None => None,
        };
        let event = match crate::layout::decode_stored(view.values, (main, sub), record, true)? {
            Some(kv) => Event {
                kind: EventKind::Put,
                kv,
                prev_kv,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.to_vec(),
                    mod_revision: main,
                    ..KeyValue::default()
                },
                prev_kv,
            },
        };
        if !visit(Some(event)) {
            break;
        }
    }
    Ok(())
}
