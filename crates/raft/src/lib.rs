//! The Raft consensus algorithm as a deterministic state machine.
//!
//! This crate is the heart of raftkv and knows nothing of the world around
//! it: it owns no file, socket, thread, clock or global random source. Time
//! is a count of [`RawNode::tick`] calls; randomness comes from
//! [`Config::seed`]; the network and the disk are the application's, reached
//! only through the values this crate hands out. The same code therefore runs
//! in the server and in the deterministic simulator, and a failing run can be
//! replayed exactly from its seed.
//!
//! # Driving a node
//!
//! Input goes in through [`RawNode::step`] (messages from peers),
//! [`RawNode::tick`], [`RawNode::propose`], [`RawNode::read_index`],
//! [`RawNode::propose_conf_change`] and [`RawNode::transfer_leader`]. Output
//! comes out as a [`Ready`]; carrying it out and calling
//! [`RawNode::advance`] completes the cycle.
//!
//! ```
//! use bytes::Bytes;
//! use raftkv_raft::{Config, RawNode, Role, ConfChange};
//!
//! // A one-node cluster: bootstrap, campaign, propose, and drive readies.
//! let mut node = RawNode::bootstrap(Config::new(1), &[1]).unwrap();
//! let mut applied = Vec::new();
//! let mut drive = |node: &mut RawNode, applied: &mut Vec<Bytes>| {
//!     while node.has_ready() {
//!         let ready = node.ready();
//!         // 1. persist ready.entries / ready.hard_state (a real node fsyncs)
//!         // 2. send ready.messages and ready.persisted_messages (none here)
//!         // 3. apply committed entries
//!         for entry in &ready.committed_entries {
//!             match entry.kind {
//!                 raftkv_raft::EntryKind::ConfChange => {
//!                     let cc = ConfChange::decode(&entry.data).unwrap();
//!                     node.apply_conf_change(&cc).unwrap();
//!                 }
//!                 raftkv_raft::EntryKind::Normal if !entry.data.is_empty() => {
//!                     applied.push(entry.data.clone());
//!                 }
//!                 _ => {}
//!             }
//!         }
//!         node.advance();
//!     }
//! };
//! drive(&mut node, &mut applied);
//! node.campaign();
//! drive(&mut node, &mut applied);
//! assert_eq!(node.status().soft_state.role, Role::Leader);
//! node.propose(Bytes::from_static(b"hello")).unwrap();
//! drive(&mut node, &mut applied);
//! assert_eq!(applied, vec![Bytes::from_static(b"hello")]);
//! ```
//!
//! # The persistence contract
//!
//! Raft is only safe if a node never speaks for state it could forget in a
//! crash. This crate enforces the rule by where it puts messages; the
//! application enforces it by the order in which it carries out a [`Ready`]:
//!
//! - **No vote and no append acknowledgement leaves before the state it
//!   reports is durable.** Such messages are always in
//!   [`Ready::persisted_messages`], which may be sent only once the ready's
//!   entries, hard state and snapshot are on disk. A follower or candidate
//!   puts every message there.
//! - **The leader may send before its own fsync** (Raft thesis §10.2.1): its
//!   appends are in [`Ready::messages`] and may go out while its disk write
//!   runs. It counts itself toward a commit quorum only for entries
//!   acknowledged durable by [`RawNode::advance`], so an entry is committed
//!   only when a quorum has really stored it.
//! - **One fsync covers a whole batch.** A ready carries every entry proposed
//!   since the last one; [`Ready::must_sync`] says whether the fsync is needed
//!   (a change of commit index alone does not need it).
//! - **Nothing is applied before it is persisted**: committed entries handed
//!   out in a ready are in the log persisted by this or an earlier ready.
//!
//! # Limits
//!
//! Every queue has a bound, set in [`Config`]: bytes per append message,
//! appends and bytes in flight per follower, uncommitted bytes on the leader
//! (proposals beyond it are refused with [`Error::ProposalDropped`]), and
//! entries and bytes handed out for applying per ready.
#![deny(missing_docs, unsafe_code)]

mod confchange;
mod config;
mod error;
mod log;
mod quorum;
mod raft;
mod raw_node;
mod read_only;
mod tracker;
mod types;

pub use config::{Config, ReadOnlyOption};
pub use error::{ConfChangeError, DropReason, Error, Result};
pub use log::RaftLog;
pub use quorum::{JointVoters, VoteResult};
pub use raft::{Raft, Role};
pub use raw_node::{InitialState, RawNode, Ready, SoftState, Status};
pub use tracker::{Inflights, Membership, Progress, ProgressState, ProgressTracker};
pub use types::*;
