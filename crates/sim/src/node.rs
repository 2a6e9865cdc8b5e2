//! One simulated server: a Raft node, the disk it persists to, and the
//! key-value state machine it applies committed entries to.
//!
//! A crash throws away the [`RawNode`] and the state machine and keeps only
//! the [`Disk`]; a restart rebuilds both from it, exactly as a real server
//! does after `kill -9`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftkv_raft::{
    ConfChange, Config, Entry, EntryKind, HardState, Index, InitialState, NodeId, RawNode, Snapshot,
};

/// What survives a crash: everything the node made durable.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// Persisted entries after the snapshot.
    pub entries: Vec<Entry>,
    /// The latest snapshot.
    pub snapshot: Snapshot,
}

impl Disk {
    /// Writes entries, replacing any persisted entry at or after the first.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let keep = self
            .entries
            .iter()
            .take_while(|e| e.index < first.index)
            .count();
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot, dropping every entry it covers.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) {
        let index = snapshot.meta.index;
        if snapshot.meta.term != 0 && self.entry_term(index) == Some(snapshot.meta.term) {
            // A snapshot of our own log: keep the entries after it.
            self.entries.retain(|e| e.index > index);
        } else {
            // A snapshot from the leader replaces the whole log.
            self.entries.clear();
        }
        self.snapshot = snapshot.clone();
    }

    fn entry_term(&self, index: Index) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }

    /// The term of the durable entry at `index` (including the snapshot's).
    pub fn term(&self, index: Index) -> Option<u64> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        self.entry_term(index)
    }

    /// The state a restarted node begins from.
    pub fn initial_state(&self) -> InitialState {
        InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.meta.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// The replicated state machine: a map of registers, and the ids of the
/// writes applied, so a client's retry of a write is applied only once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    /// Key to (value, index of the write).
    pub values: BTreeMap<String, (u64, Index)>,
    /// The last applied index.
    pub applied: Index,
    /// Ids of the writes applied: the de-duplication table.
    pub applied_writes: BTreeSet<u64>,
    /// Retries recognised and not applied again.
    pub duplicates_skipped: u64,
}

/// A write the simulator proposes: `key` takes `value`, tagged with a unique id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Unique id of the proposal.
    pub id: u64,
    /// The register written.
    pub key: String,
    /// The value written.
    pub value: u64,
}

impl Write {
    /// The entry payload.
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!("{}:{}:{}", self.id, self.key, self.value))
    }

    /// Parses a payload written by [`Write::encode`].
    pub fn decode(data: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let mut parts = text.split(':');
        let id = parts.next()?.parse().ok()?;
        let key = parts.next()?.to_string();
        let value = parts.next()?.parse().ok()?;
        Some(Self { id, key, value })
    }
}

impl KvState {
    /// Applies one committed entry. Membership changes are the node's
    /// business and are skipped here.
    pub fn apply(&mut self, entry: &Entry) {
        debug_assert_eq!(entry.index, self.applied + 1, "entries apply in order");
        if entry.kind == EntryKind::Normal {
            if let Some(write) = Write::decode(&entry.data) {
                if self.applied_writes.insert(write.id) {
                    self.values.insert(write.key, (write.value, entry.index));
                } else {
                    // The same request committed twice (a client retried
                    // after losing the answer): its first outcome stands.
                    self.duplicates_skipped += 1;
                }
            }
        }
        self.applied = entry.index;
    }

    /// Serializes the state for a snapshot.
    pub fn encode(&self) -> Bytes {
        let ids: Vec<String> = self.applied_writes.iter().map(u64::to_string).collect();
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.applied,
            self.duplicates_skipped,
            ids.join(",")
        );
        for (key, (value, index)) in &self.values {
            text.push_str(&format!("{key}={value}@{index}\n"));
        }
        Bytes::from(text)
    }

    /// Restores a state written by [`KvState::encode`].
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.is_empty() {
            return Some(Self::default());
        }
        let text = std::str::from_utf8(data).ok()?;
        let mut lines = text.lines();
        let applied = lines.next()?.parse().ok()?;
        let duplicates_skipped = lines.next()?.parse().ok()?;
        let mut applied_writes = BTreeSet::new();
        for id in lines.next()?.split(',').filter(|id| !id.is_empty()) {
            applied_writes.insert(id.parse().ok()?);
        }
        let mut values = BTreeMap::new();
        for line in lines {
            let (key, rest) = line.split_once('=')?;
            let (value, index) = rest.split_once('@')?;
            values.insert(key.to_string(), (value.parse().ok()?, index.parse().ok()?));
        }
        Some(Self {
            values,
            applied,
            applied_writes,
            duplicates_skipped,
        })
    }
}

/// A simulated server.
pub struct SimNode {
    /// The node's id.
    pub id: NodeId,
    /// The running Raft node; `None` while crashed.
    pub raft: Option<RawNode>,
    /// Durable state.
    pub disk: Disk,
    /// Applied state (lost on crash, rebuilt from snapshot and log).
    pub kv: KvState,
    /// The Raft settings the node starts with.
    pub config: Config,
    /// Reads that became safe at an index the node has not yet applied:
    /// `(read id, index)`.
    pub pending_reads: Vec<(u64, Index)>,
}

impl SimNode {
    /// A founding member of a new cluster of `voters`.
    pub fn bootstrap(config: Config, voters: &[NodeId]) -> raftkv_raft::Result<Self> {
        let raft = RawNode::bootstrap(config.clone(), voters)?;
        Ok(Self::with_raft(config, raft))
    }

    /// A node that will join an existing cluster: it starts empty.
    pub fn joining(config: Config) -> raftkv_raft::Result<Self> {
        let raft = RawNode::new(config.clone(), InitialState::default())?;
        Ok(Self::with_raft(config, raft))
    }

    fn with_raft(config: Config, raft: RawNode) -> Self {
        Self {
            id: config.id,
            raft: Some(raft),
            disk: Disk::default(),
            kv: KvState::default(),
            config,
            pending_reads: Vec::new(),
        }
    }

    /// Whether the process is running.
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Kills the process: memory is lost, the disk stays.
    pub fn crash(&mut self) {
        self.raft = None;
        self.kv = KvState::default();
        self.pending_reads.clear();
    }

    /// Starts the process again from its disk.
    pub fn restart(&mut self) -> raftkv_raft::Result<()> {
        self.kv = KvState::decode(&self.disk.snapshot.data).unwrap_or_default();
        self.kv.applied = self.disk.snapshot.meta.index;
        self.raft = Some(RawNode::new(
            self.config.clone(),
            self.disk.initial_state(),
        )?);
        Ok(())
    }

    /// Applies a membership change entry to the running node.
    pub fn apply_conf_change(&mut self, entry: &Entry) {
        let Some(raft) = self.raft.as_mut() else {
            return;
        };
        match ConfChange::decode(&entry.data) {
            Ok(cc) => {
                // A refused change is refused identically on every node.
                let _ = raft.apply_conf_change(&cc);
            }
            Err(err) => panic!("undecodable membership change at {}: {err}", entry.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_state_round_trips_through_snapshots() {
        let mut kv = KvState::default();
        let write = Write {
            id: 7,
            key: "k1".into(),
            value: 42,
        };
        kv.apply(&Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Normal,
            data: write.encode(),
        });
        assert_eq!(KvState::decode(&kv.encode()), Some(kv));
    }

    #[test]
    fn a_retried_write_is_applied_once() {
        let mut kv = KvState::default();
        let write = Write {
            id: 3,
            key: "k".into(),
            value: 1,
        };
        for index in 1..=2 {
            kv.apply(&Entry {
                term: 1,
                index,
                kind: EntryKind::Normal,
                data: write.encode(),
            });
        }
        assert_eq!(kv.values["k"], (1, 1), "the first application stands");
        assert_eq!(kv.duplicates_skipped, 1);
    }

    #[test]
    fn disk_append_replaces_the_suffix() {
        let entry = |index, term| Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        let mut disk = Disk::default();
        disk.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        disk.append(&[entry(2, 2)]);
        assert_eq!(disk.entries.len(), 2);
        assert_eq!(disk.term(2), Some(2));
    }
}
