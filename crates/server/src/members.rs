//! The cluster's members as the replicated state records them.
//!
//! A member's record (name, peer and client URLs, learner or voter) lives in
//! the store's aux records, written in the same transaction as the entry
//! that changed it, so every member derives the same list from the log and a
//! snapshot carries it. Raft membership changes carry the new member's
//! record as their context; the founders' records ride on the bootstrap
//! entries. Names and client URLs, which a member only knows once it runs,
//! arrive later through a replicated publish (as etcd does).
//!
//! [`MemberDirectory`] is the in-memory copy the services and the peer
//! transport read; the state machine reloads it after every change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use prost::Message as _;
use raftkv_mvcc::{Batch, MvccError, Store};
use raftkv_proto::raftkvpeer::Member;
use raftkv_raft::{ConfChange, ConfChangeStep, NodeId};

/// Namespace of member records in the store's aux records.
pub(crate) const MEMBERS: &str = "member";
/// Namespace of the ids of removed members, which may never come back.
pub(crate) const REMOVED: &str = "member_removed";

fn key(id: NodeId) -> [u8; 8] {
    id.to_be_bytes()
}

fn id_of(key: &[u8]) -> Option<NodeId> {
    Some(NodeId::from_be_bytes(key.try_into().ok()?))
}

/// Records a committed membership change. `context` is the record of the
/// member it adds (empty for a promotion or a removal).
pub fn apply_conf_change(batch: &mut Batch<'_>, change: &ConfChange) -> Result<(), MvccError> {
    let record = Member::decode(change.context.as_ref()).ok();
    for step in &change.steps {
        let (id, learner) = match *step {
            ConfChangeStep::AddVoter(id) => (id, false),
            ConfChangeStep::AddLearner(id) => (id, true),
            ConfChangeStep::RemoveNode(id) => {
                batch.aux_delete(MEMBERS, &key(id))?;
                batch.aux_put(REMOVED, &key(id), &[])?;
                continue;
            }
        };
        let stored = batch
            .aux_get(MEMBERS, &key(id))?
            .and_then(|bytes| Member::decode(bytes.as_slice()).ok());
        let mut member = match (stored, &record) {
            (Some(stored), _) => stored,
            (None, Some(record)) if record.id == id => record.clone(),
            // A change without a record of the member (from a tool that
            // speaks Raft only): keep what Raft knows.
            (None, _) => Member {
                id,
                ..Member::default()
            },
        };
        member.is_learner = learner;
        batch.aux_put(MEMBERS, &key(id), &member.encode_to_vec())?;
    }
    Ok(())
}

/// Changes a member's peer URLs (MemberUpdate). False if it is not a member.
pub fn update_peer_urls(
    batch: &mut Batch<'_>,
    id: NodeId,
    peer_urls: Vec<String>,
) -> Result<bool, MvccError> {
    update(batch, id, |member| member.peer_urls = peer_urls)
}

/// Records the name and client URLs a running member published.
pub fn publish(
    batch: &mut Batch<'_>,
    id: NodeId,
    name: String,
    client_urls: Vec<String>,
) -> Result<bool, MvccError> {
    update(batch, id, |member| {
        member.name = name;
        member.client_urls = client_urls;
    })
}

fn update(
    batch: &mut Batch<'_>,
    id: NodeId,
    change: impl FnOnce(&mut Member),
) -> Result<bool, MvccError> {
    let Some(mut member) = batch
        .aux_get(MEMBERS, &key(id))?
        .and_then(|bytes| Member::decode(bytes.as_slice()).ok())
    else {
        return Ok(false);
    };
    change(&mut member);
    batch.aux_put(MEMBERS, &key(id), &member.encode_to_vec())?;
    Ok(true)
}

#[derive(Default)]
struct Members {
    members: BTreeMap<NodeId, Member>,
    removed: BTreeSet<NodeId>,
}

/// The members as last applied, shared by the services and the transport.
#[derive(Default)]
pub struct MemberDirectory {
    members: RwLock<Members>,
    /// Fired when this member learns that it was removed.
    removed_self: tokio::sync::Notify,
    self_id: NodeId,
}

impl MemberDirectory {
    /// An empty directory for member `self_id`.
    pub fn new(self_id: NodeId) -> Arc<Self> {
        Arc::new(Self {
            self_id,
            ..Self::default()
        })
    }

    /// Replaces the directory with what the store records. Members the
    /// store does not know yet (before the bootstrap entries are applied)
    /// keep the records they were seeded with.
    pub fn load(&self, store: &Store) -> Result<(), MvccError> {
        let members: BTreeMap<NodeId, Member> = store
            .aux_scan(MEMBERS)?
            .into_iter()
            .filter_map(|(key, value)| Some((id_of(&key)?, Member::decode(value.as_slice()).ok()?)))
            .collect();
        let removed: BTreeSet<NodeId> = store
            .aux_scan(REMOVED)?
            .into_iter()
            .filter_map(|(key, _)| id_of(&key))
            .collect();
        let removed_self = removed.contains(&self.self_id);
        if let Ok(mut inner) = self.members.write() {
            if !members.is_empty() || !removed.is_empty() {
                inner.members = members;
                inner.removed = removed;
            }
        }
        if removed_self {
            self.removed_self.notify_one();
        }
        Ok(())
    }

    /// Records members known before the log says so: the founders from the
    /// flags, or the cluster a joining member asked. The store's records
    /// replace them once applied.
    pub fn seed(&self, members: impl IntoIterator<Item = Member>) {
        if let Ok(mut inner) = self.members.write() {
            if inner.members.is_empty() {
                inner.members = members.into_iter().map(|m| (m.id, m)).collect();
            }
        }
    }

    /// The member this directory belongs to.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Every member, by id.
    pub fn list(&self) -> Vec<Member> {
        self.members
            .read()
            .map(|inner| inner.members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One member.
    pub fn get(&self, id: NodeId) -> Option<Member> {
        self.members
            .read()
            .ok()
            .and_then(|inner| inner.members.get(&id).cloned())
    }

    /// Where to reach a member's peer service.
    pub fn peer_url(&self, id: NodeId) -> Option<String> {
        self.get(id).and_then(|m| m.peer_urls.first().cloned())
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.members
            .read()
            .is_ok_and(|inner| inner.removed.contains(&id))
    }

    /// Notes that the cluster told this member it was removed.
    pub fn mark_self_removed(&self) {
        self.removed_self.notify_one();
    }

    /// Resolves once this member has been removed from the cluster.
    pub async fn self_removed(&self) {
        self.removed_self.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_mvcc::Config;

    fn record(id: NodeId, url: &str) -> Member {
        Member {
            id,
            name: format!("m{id}"),
            peer_urls: vec![url.to_string()],
            client_urls: Vec::new(),
            is_learner: false,
        }
    }

    fn change(step: ConfChangeStep, context: Option<&Member>) -> ConfChange {
        ConfChange {
            context: context
                .map(|m| m.encode_to_vec().into())
                .unwrap_or_default(),
            ..ConfChange::single(step)
        }
    }

    #[test]
    fn changes_are_recorded_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Config::new(dir.path().join("kv.redb"))).unwrap();
        let a = record(1, "http://127.0.0.1:1");
        let b = record(2, "http://127.0.0.1:2");
        let mut index = 0;
        let mut apply = |f: &dyn Fn(&mut Batch<'_>) -> Result<(), MvccError>| {
            index += 1;
            store
                .apply(|batch| {
                    batch.begin_entry(index, 1);
                    f(batch)
                })
                .unwrap();
        };
        apply(&|batch| apply_conf_change(batch, &change(ConfChangeStep::AddVoter(1), Some(&a))));
        apply(&|batch| apply_conf_change(batch, &change(ConfChangeStep::AddLearner(2), Some(&b))));
        apply(&|batch| {
            publish(batch, 2, "two".into(), vec!["http://127.0.0.1:9".into()]).map(|_| ())
        });
        let directory = MemberDirectory::new(1);
        directory.load(&store).unwrap();
        let listed = directory.list();
        assert_eq!(listed.len(), 2);
        assert!(listed[1].is_learner);
        assert_eq!(listed[1].name, "two");
        assert_eq!(listed[1].client_urls, vec!["http://127.0.0.1:9"]);

        // Promotion keeps the record; removal forgets it for good.
        apply(&|batch| apply_conf_change(batch, &change(ConfChangeStep::AddVoter(2), None)));
        directory.load(&store).unwrap();
        assert!(!directory.get(2).unwrap().is_learner);
        assert_eq!(directory.get(2).unwrap().name, "two");
        apply(&|batch| apply_conf_change(batch, &change(ConfChangeStep::RemoveNode(2), None)));
        directory.load(&store).unwrap();
        assert!(directory.get(2).is_none());
        assert!(directory.is_removed(2));
        assert!(!directory.is_removed(1));

        // Updating a member that is gone reports it.
        let mut found = true;
        store
            .apply(|batch| {
                batch.begin_entry(99, 1);
                found = update_peer_urls(batch, 2, vec!["http://x:1".into()])?;
                Ok(())
            })
            .unwrap();
        assert!(!found);
    }
}
