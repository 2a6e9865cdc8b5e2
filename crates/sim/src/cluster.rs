//! A simulated cluster: nodes, the network between them, the checker, and a
//! transcript of everything that happened.
//!
//! The cluster can be driven two ways. Scripted tests call [`Cluster::deliver`],
//! [`Cluster::tick`], [`Cluster::crash`] and friends to place the cluster in an
//! exact state, message by message. Random runs (see [`crate::random`]) call
//! [`Cluster::step`], which advances time and lets the network deliver what is
//! due. Either way every change is checked by the [`Checker`].

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_raft::{
    ConfChange, Config, Entry, EntryKind, Index, Message, MessageBody, NodeId, Ready, Role,
    Snapshot, SnapshotMeta, Term,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::checker::{Checker, Violation};
use crate::network::{Network, NetworkFaults, SendOutcome};
use crate::node::{KvState, SimNode, Write};

/// How a cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The founding voters.
    pub voters: Vec<NodeId>,
    /// Nodes that exist but are not members yet (they may join later).
    pub spares: Vec<NodeId>,
    /// The seed of everything random.
    pub seed: u64,
    /// Network faults.
    pub faults: NetworkFaults,
    /// Adjusts each node's Raft settings.
    pub configure: fn(&mut Config),
}

impl ClusterOptions {
    /// A cluster of `voters` on a reliable network.
    pub fn new(voters: &[NodeId]) -> Self {
        Self {
            voters: voters.to_vec(),
            spares: Vec::new(),
            seed: 0,
            faults: NetworkFaults::reliable(),
            configure: |_| {},
        }
    }
}

/// A proposal made at a leader, to be resolved as committed or failed.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The write proposed.
    pub write: Write,
    /// The node it was proposed at.
    pub node: NodeId,
    /// The index and term the leader gave it.
    pub index: Index,
    /// The term.
    pub term: Term,
}

/// How a proposal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// The entry was committed at its index.
    Committed,
    /// Another entry was committed at its index, or the proposer's log no
    /// longer holds it: the proposer knows it failed.
    Failed,
    /// Neither yet.
    Pending,
}

#[derive(Clone, Debug)]
struct ReadRecord {
    /// The highest committed index when the read was issued.
    committed_at_issue: Index,
    served: Option<(NodeId, Index)>,
}

/// Counters of what a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered.
    pub messages_delivered: u64,
    /// Messages lost (dropped, cut, or sent to a crashed node).
    pub messages_lost: u64,
    /// Crashes.
    pub crashes: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Membership changes applied (counted once per node).
    pub conf_changes_applied: u64,
    /// Reads served.
    pub reads_served: u64,
    /// Compactions taken.
    pub compactions: u64,
    /// The most committed entries handed out in one ready.
    pub largest_apply_batch: usize,
}

/// A simulated cluster.
pub struct Cluster {
    /// The nodes, crashed or running.
    pub nodes: BTreeMap<NodeId, SimNode>,
    /// The network.
    pub network: Network,
    /// The safety checker.
    pub checker: Checker,
    /// Simulation time in steps.
    pub now: u64,
    /// Randomness for the network and for random runs.
    pub rng: SmallRng,
    /// Counters.
    pub stats: Stats,
    /// Proposals made through [`Cluster::propose`].
    pub proposals: Vec<Proposal>,
    /// Compact a node's log once it has applied this many entries past its
    /// last snapshot (0: never).
    pub compact_every: u64,
    observed_commit: BTreeMap<NodeId, Index>,
    reads: BTreeMap<u64, ReadRecord>,
    next_read_id: u64,
    next_write_id: u64,
    transcript: Transcript,
}

/// A readable record of what happened, kept for failure reports.
#[derive(Debug, Default)]
struct Transcript {
    lines: std::collections::VecDeque<String>,
    /// Print lines as they are written.
    echo: bool,
    /// Keep at most this many lines (0: all).
    keep: usize,
    /// Lines written so far.
    written: u64,
}

impl Transcript {
    fn push(&mut self, now: u64, line: String) {
        self.written += 1;
        // Scripted tests do not advance time; number their lines instead.
        let line = if now == 0 {
            format!("#{:<5} {line}", self.written)
        } else {
            format!("[{now:>6}] {line}")
        };
        if self.echo {
            println!("{line}");
        }
        self.lines.push_back(line);
        if self.keep > 0 && self.lines.len() > self.keep {
            self.lines.pop_front();
        }
    }
}

impl Cluster {
    /// Builds a cluster; founding voters bootstrap, spares start empty.
    pub fn new(options: ClusterOptions) -> Self {
        let mut nodes = BTreeMap::new();
        for &id in options.voters.iter().chain(&options.spares) {
            let mut config = Config::new(id);
            config.seed = options.seed;
            (options.configure)(&mut config);
            let node = if options.voters.contains(&id) {
                SimNode::bootstrap(config, &options.voters)
            } else {
                SimNode::joining(config)
            };
            match node {
                Ok(node) => {
                    nodes.insert(id, node);
                }
                Err(err) => panic!("invalid simulated node config: {err}"),
            }
        }
        let mut cluster = Self {
            nodes,
            network: Network::new(options.faults),
            checker: Checker::default(),
            now: 0,
            rng: SmallRng::seed_from_u64(options.seed),
            stats: Stats::default(),
            proposals: Vec::new(),
            compact_every: 0,
            observed_commit: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_id: 0,
            next_write_id: 0,
            transcript: Transcript {
                keep: 600,
                ..Transcript::default()
            },
        };
        for id in cluster.ids() {
            cluster
                .process(id)
                .unwrap_or_else(|v| panic!("bootstrap broke an invariant: {v}"));
        }
        cluster
    }

    /// Prints the transcript as it is written, and keeps all of it.
    pub fn echo_transcript(&mut self) {
        self.transcript.echo = true;
        self.transcript.keep = 0;
    }

    /// The transcript so far (the most recent lines in random runs).
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.lines.iter().cloned().collect()
    }

    /// Adds a free-form line to the transcript.
    pub fn note(&mut self, line: impl Into<String>) {
        self.transcript
            .push(self.now, format!("-- {}", line.into()));
    }

    /// One line per node: role, term, log marks, configuration.
    pub fn describe_nodes(&self) -> Vec<String> {
        self.nodes
            .values()
            .map(|node| match node.raft.as_ref() {
                None => format!("node {}: DOWN (disk: {:?}, {} entries)", node.id, node.disk.hard_state, node.disk.entries.len()),
                Some(raw) => {
                    let raft = raw.raft();
                    let cs = raw.status().conf_state;
                    format!(
                        "node {}: {:?} term {} vote {} leader {} | log {}..={} stable {} commit {} applied {} | voters {:?} outgoing {:?} learners {:?}",
                        node.id, raft.role, raft.term, raft.vote, raft.leader_id, raft.log.first_index(),
                        raft.log.last_index(), raft.log.stable_index(), raft.log.committed, node.kv.applied,
                        cs.voters, cs.voters_outgoing, cs.learners
                    )
                }
            })
            .collect()
    }

    /// All node ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of running nodes.
    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    /// The running node `id`'s Raft state.
    pub fn raft(&self, id: NodeId) -> Option<&raftkv_raft::Raft> {
        self.nodes.get(&id)?.raft.as_ref().map(|r| r.raft())
    }

    /// The running node that leads the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.raft.as_ref().map(|r| (n.id, r.raft())))
            .filter(|(_, r)| r.role == Role::Leader)
            .max_by_key(|(_, r)| r.term)
            .map(|(id, _)| id)
    }

    // ---- carrying out readies --------------------------------------------

    /// Carries out every ready of node `id`, in the order the persistence
    /// contract requires.
    pub fn process(&mut self, id: NodeId) -> Result<(), Violation> {
        self.process_inner(id, false).map(|_| ())
    }

    /// Carries out the next ready of `id` only as far as a leader may before
    /// its fsync: its messages go out, then the process dies with nothing
    /// of the ready persisted. Returns the messages sent.
    pub fn process_then_crash_before_persist(&mut self, id: NodeId) -> Result<usize, Violation> {
        self.process_inner(id, true)
    }

    fn process_inner(
        &mut self,
        id: NodeId,
        crash_before_persist: bool,
    ) -> Result<usize, Violation> {
        let mut sent = 0;
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return Ok(sent);
            };
            let Some(raft) = node.raft.as_mut() else {
                return Ok(sent);
            };
            if !raft.has_ready() {
                return Ok(sent);
            }
            let ready = raft.ready();
            if let Some(soft) = ready.soft_state {
                let term = raft.raft().term;
                self.transcript
                    .push(self.now, format!("{id} is {:?} of term {term}", soft.role));
                if soft.role == Role::Leader {
                    self.checker.observe_leader(id, term)?;
                    if let Some(raft) = self.raft(id) {
                        self.checker.check_leader_complete(id, term, &raft.log)?;
                    }
                }
            }
            // A leader's appends may leave before its own disk write.
            for msg in ready.messages.iter().cloned() {
                sent += 1;
                self.send(msg);
            }
            if crash_before_persist {
                self.crash(id);
                return Ok(sent);
            }
            self.persist(id, &ready)?;
            for msg in ready.persisted_messages.iter().cloned() {
                sent += 1;
                self.send(msg);
            }
            self.apply(id, ready)?;
            if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                raft.advance();
            }
            self.after_advance(id)?;
        }
    }

    fn persist(&mut self, id: NodeId, ready: &Ready) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if let Some(snapshot) = &ready.snapshot {
            node.disk.install_snapshot(snapshot);
        }
        if let Some(first) = ready.entries.first() {
            let prev_index = first.index - 1;
            let prev_term = node.disk.term(prev_index).unwrap_or(0);
            self.checker
                .observe_appended(id, &ready.entries, prev_term)?;
            node.disk.append(&ready.entries);
        }
        if let Some(hard_state) = ready.hard_state {
            node.disk.hard_state = hard_state;
        }
        Ok(())
    }

    fn apply(&mut self, id: NodeId, ready: Ready) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if let Some(snapshot) = ready.snapshot {
            match KvState::decode(&snapshot.data) {
                Some(mut kv) => {
                    kv.applied = snapshot.meta.index;
                    node.kv = kv;
                }
                None => panic!("node {id} received an undecodable snapshot"),
            }
            self.stats.snapshots_installed += 1;
            self.transcript.push(
                self.now,
                format!("{id} installed snapshot at {}", snapshot.meta.index),
            );
        }
        self.stats.largest_apply_batch = self
            .stats
            .largest_apply_batch
            .max(ready.committed_entries.len());
        let node_term = node.raft.as_ref().map_or(0, |r| r.raft().term);
        for entry in &ready.committed_entries {
            self.checker.observe_applied(id, node_term, entry)?;
            if entry.kind == EntryKind::ConfChange {
                node.apply_conf_change(entry);
                self.stats.conf_changes_applied += 1;
                if let Some(raft) = node.raft.as_ref() {
                    let cs = raft.status().conf_state;
                    self.transcript.push(
                        self.now,
                        format!("{id} applied conf change at {}: voters {:?} learners {:?} outgoing {:?}",
                            entry.index, cs.voters, cs.learners, cs.voters_outgoing),
                    );
                }
            }
            node.kv.apply(entry);
        }
        for read in ready.read_states {
            let Some(read_id) = decode_read_id(&read.context) else {
                continue;
            };
            node.pending_reads.push((read_id, read.index));
        }
        Ok(())
    }

    fn after_advance(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let commit = raft.raft().log.committed;
        let seen = self.observed_commit.get(&id).copied().unwrap_or(0);
        if commit > seen {
            self.checker
                .observe_commit(id, raft.raft().term, &raft.raft().log, seen, commit)?;
            self.observed_commit.insert(id, commit);
        }
        // Serve the reads whose index is now applied.
        let applied = node.kv.applied;
        let (ready_reads, waiting): (Vec<_>, Vec<_>) = node
            .pending_reads
            .drain(..)
            .partition(|&(_, index)| index <= applied);
        node.pending_reads = waiting;
        for (read_id, index) in ready_reads {
            self.serve_read(id, read_id, index)?;
        }
        self.maybe_compact(id);
        Ok(())
    }

    fn serve_read(&mut self, id: NodeId, read_id: u64, index: Index) -> Result<(), Violation> {
        let Some(record) = self.reads.get_mut(&read_id) else {
            return Ok(());
        };
        if record.served.is_some() {
            return Ok(()); // a duplicated answer
        }
        record.served = Some((id, index));
        self.stats.reads_served += 1;
        self.transcript.push(
            self.now,
            format!("{id} served read {read_id} at index {index}"),
        );
        if index < record.committed_at_issue {
            return Err(Violation::StaleRead {
                read: read_id,
                served: index,
                committed: record.committed_at_issue,
            });
        }
        Ok(())
    }

    fn maybe_compact(&mut self, id: NodeId) {
        if self.compact_every == 0 {
            return;
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let applied = node.kv.applied;
        let (snapshot_index, _) = raft.raft().log.snapshot_position();
        if applied < snapshot_index + self.compact_every {
            return;
        }
        let Some(term) = raft.raft().log.term(applied) else {
            return;
        };
        let meta = SnapshotMeta {
            index: applied,
            term,
            conf_state: raft.status().conf_state,
        };
        if raft.compact_log(meta.clone()).is_ok() {
            node.disk.install_snapshot(&Snapshot {
                meta,
                data: node.kv.encode(),
            });
            self.stats.compactions += 1;
        }
    }

    // ---- the network ---------------------------------------------------------

    fn send(&mut self, mut msg: Message) {
        if let MessageBody::InstallSnapshot { snapshot } = &mut msg.body {
            // The core names the snapshot; the sender's disk supplies its data.
            let Some(sender) = self.nodes.get(&msg.from) else {
                return;
            };
            if sender.disk.snapshot.meta.index != snapshot.meta.index {
                self.report_snapshot(msg.from, msg.to, false);
                return;
            }
            snapshot.data = sender.disk.snapshot.data.clone();
        }
        let line = describe(&msg);
        let outcome = self.network.send(msg.clone(), self.now, &mut self.rng);
        match outcome {
            SendOutcome::Queued => {}
            SendOutcome::Duplicated => self
                .transcript
                .push(self.now, format!("{line}  (duplicated)")),
            SendOutcome::Dropped | SendOutcome::Cut => {
                self.stats.messages_lost += 1;
                self.transcript
                    .push(self.now, format!("{line}  (lost: {outcome:?})"));
                self.lost(&msg);
            }
        }
    }

    fn lost(&mut self, msg: &Message) {
        if matches!(msg.body, MessageBody::InstallSnapshot { .. }) {
            self.report_snapshot(msg.from, msg.to, false);
        }
    }

    fn report_snapshot(&mut self, from: NodeId, to: NodeId, success: bool) {
        if let Some(raft) = self.nodes.get_mut(&from).and_then(|n| n.raft.as_mut()) {
            raft.report_snapshot(to, success);
        }
    }

    /// Delivers one message to its recipient and carries out the readies
    /// that follow.
    pub fn deliver(&mut self, msg: Message) -> Result<(), Violation> {
        let (from, to) = (msg.from, msg.to);
        let is_snapshot = matches!(msg.body, MessageBody::InstallSnapshot { .. });
        let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) else {
            self.stats.messages_lost += 1;
            self.lost(&msg);
            return Ok(());
        };
        self.transcript.push(self.now, describe(&msg));
        self.stats.messages_delivered += 1;
        // A forwarded proposal or read may be refused; the forwarder's client
        // times out, as it would against a real server.
        let _ = raft.step(msg);
        if is_snapshot {
            self.report_snapshot(from, to, true);
        }
        self.process(to)?;
        self.process(from)
    }

    /// Delivers, in send order, every in-flight message `pick` selects.
    /// Returns how many were delivered.
    pub fn deliver_matching(
        &mut self,
        pick: impl FnMut(&Message) -> bool,
    ) -> Result<usize, Violation> {
        let msgs = self.network.take_matching(pick);
        let count = msgs.len();
        for msg in msgs {
            self.deliver(msg)?;
        }
        Ok(count)
    }

    /// Loses every in-flight message `pick` selects.
    pub fn drop_matching(&mut self, pick: impl FnMut(&Message) -> bool) -> usize {
        let msgs = self.network.take_matching(pick);
        for msg in &msgs {
            self.transcript.push(
                self.now,
                format!("{}  (dropped by the test)", describe(msg)),
            );
            self.lost(msg);
        }
        msgs.len()
    }

    /// Delivers messages until none are in flight (cut links lose theirs).
    pub fn stabilize(&mut self) -> Result<(), Violation> {
        for _ in 0..10_000 {
            if self.network.is_empty() {
                return Ok(());
            }
            let (delivered, lost) = self.network.take_due(u64::MAX);
            for msg in lost {
                self.stats.messages_lost += 1;
                self.lost(&msg);
            }
            for msg in delivered {
                self.deliver(msg)?;
            }
        }
        Err(Violation::Liveness("messages never stopped flowing".into()))
    }

    // ---- time ----------------------------------------------------------------

    /// Ticks node `id` once.
    pub fn tick(&mut self, id: NodeId) -> Result<(), Violation> {
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
            raft.tick();
        }
        self.process(id)
    }

    /// Ticks every running node once.
    pub fn tick_all(&mut self) -> Result<(), Violation> {
        for id in self.up_ids() {
            self.tick(id)?;
        }
        Ok(())
    }

    /// Advances time by one step: delivers what is due, and ticks every
    /// node each `tick_every` steps.
    pub fn step(&mut self, tick_every: u64) -> Result<(), Violation> {
        self.now += 1;
        let (delivered, lost) = self.network.take_due(self.now);
        for msg in lost {
            self.stats.messages_lost += 1;
            self.lost(&msg);
        }
        for msg in delivered {
            self.deliver(msg)?;
        }
        if self.now.is_multiple_of(tick_every) {
            self.tick_all()?;
        }
        Ok(())
    }

    // ---- faults --------------------------------------------------------------

    /// Kills node `id`: it keeps only its disk.
    pub fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.is_up() {
            return;
        }
        node.crash();
        self.observed_commit.remove(&id);
        self.stats.crashes += 1;
        self.transcript.push(self.now, format!("{id} CRASHED"));
        for msg in self.network.forget_node(id) {
            self.stats.messages_lost += 1;
            self.lost(&msg);
        }
    }

    /// Restarts node `id` from its disk.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.is_up() {
            return Ok(());
        }
        if let Err(err) = node.restart() {
            return Err(Violation::Liveness(format!(
                "node {id} cannot restart from its disk: {err}"
            )));
        }
        self.transcript.push(self.now, format!("{id} RESTARTED"));
        self.process(id)
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.ids().into_iter().filter(|&o| o != id).collect();
        self.network.partition(&[id], &others);
        self.transcript.push(self.now, format!("{id} ISOLATED"));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.network.heal();
        self.transcript.push(self.now, "network HEALED".to_string());
    }

    // ---- clients -------------------------------------------------------------

    /// Proposes a new write at node `id` (which should be the leader) and
    /// returns where the leader put it.
    pub fn propose(
        &mut self,
        id: NodeId,
        key: &str,
        value: u64,
    ) -> Result<Proposal, raftkv_raft::Error> {
        self.next_write_id += 1;
        let write = Write {
            id: self.next_write_id,
            key: key.to_string(),
            value,
        };
        self.propose_write(id, write)
    }

    /// Proposes `write` at node `id`; proposing a write again with the same
    /// id is a client's retry.
    pub fn propose_write(
        &mut self,
        id: NodeId,
        write: Write,
    ) -> Result<Proposal, raftkv_raft::Error> {
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            self.transcript.push(
                self.now,
                format!("client cannot reach {id}: write {} fails", write.id),
            );
            return Err(raftkv_raft::Error::ProposalDropped(
                raftkv_raft::DropReason::NoLeader,
            ));
        };
        raft.propose(write.encode())?;
        let (index, term) = (raft.raft().log.last_index(), raft.raft().term);
        self.transcript.push(
            self.now,
            format!(
                "client proposes {}={} (write {}) at {id}: index {index}, term {term}",
                write.key, write.value, write.id
            ),
        );
        let proposal = Proposal {
            write,
            node: id,
            index,
            term,
        };
        self.proposals.push(proposal.clone());
        if let Err(v) = self.process(id) {
            panic!("invariant broken after a proposal: {v}");
        }
        Ok(proposal)
    }

    /// How a proposal has ended so far.
    pub fn outcome(&self, proposal: &Proposal) -> ProposalOutcome {
        match self.checker.committed_entry(proposal.index) {
            Some((term, data)) if term == proposal.term && *data == proposal.write.encode() => {
                return ProposalOutcome::Committed;
            }
            Some(_) => return ProposalOutcome::Failed,
            None => {}
        }
        // A proposer removed from the cluster hears from it no more; like
        // etcd, it answers its clients that it was removed.
        if !self.members().contains(&proposal.node) {
            return ProposalOutcome::Failed;
        }
        // The proposer learns of the failure when its log loses the entry.
        match self.raft(proposal.node) {
            Some(raft) if raft.log.term(proposal.index) != Some(proposal.term) => {
                ProposalOutcome::Failed
            }
            _ => ProposalOutcome::Pending,
        }
    }

    /// Starts a linearizable read at node `id`; returns the read's id.
    pub fn read(&mut self, id: NodeId) -> Result<u64, raftkv_raft::Error> {
        self.next_read_id += 1;
        let read_id = self.next_read_id;
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return Err(raftkv_raft::Error::ReadDropped(
                raftkv_raft::DropReason::NoLeader,
            ));
        };
        raft.read_index(Bytes::from(read_id.to_le_bytes().to_vec()))?;
        self.reads.insert(
            read_id,
            ReadRecord {
                committed_at_issue: self.checker.committed_index,
                served: None,
            },
        );
        if let Err(v) = self.process(id) {
            panic!("invariant broken after a read: {v}");
        }
        Ok(read_id)
    }

    /// Where a read was served, if it was: `(node, index)`.
    pub fn read_served(&self, read_id: u64) -> Option<(NodeId, Index)> {
        self.reads.get(&read_id).and_then(|r| r.served)
    }

    /// The value of `key` on node `id`'s state machine.
    pub fn value(&self, id: NodeId, key: &str) -> Option<u64> {
        self.nodes.get(&id)?.kv.values.get(key).map(|(v, _)| *v)
    }

    /// Proposes a membership change at node `id`.
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        cc: &ConfChange,
    ) -> Result<(), raftkv_raft::Error> {
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return Err(raftkv_raft::Error::ProposalDropped(
                raftkv_raft::DropReason::NoLeader,
            ));
        };
        raft.propose_conf_change(cc)?;
        self.transcript.push(
            self.now,
            format!("{id} proposes conf change {:?}", cc.steps),
        );
        if let Err(v) = self.process(id) {
            panic!("invariant broken after a conf change: {v}");
        }
        Ok(())
    }

    /// Asks node `id` to hand leadership to `target`.
    pub fn transfer_leader(
        &mut self,
        id: NodeId,
        target: NodeId,
    ) -> Result<(), raftkv_raft::Error> {
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return Err(raftkv_raft::Error::ProposalDropped(
                raftkv_raft::DropReason::NoLeader,
            ));
        };
        raft.transfer_leader(target)?;
        self.transcript
            .push(self.now, format!("{id} transfers leadership to {target}"));
        if let Err(v) = self.process(id) {
            panic!("invariant broken after a transfer: {v}");
        }
        Ok(())
    }

    /// Campaigns at node `id` at once.
    pub fn campaign(&mut self, id: NodeId) -> Result<(), Violation> {
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
            raft.campaign();
        }
        self.process(id)
    }

    /// Makes `id` leader on a healthy network: campaign and deliver.
    pub fn elect(&mut self, id: NodeId) -> Result<(), Violation> {
        self.campaign(id)?;
        self.stabilize()?;
        if self.leader() != Some(id) {
            return Err(Violation::Liveness(format!(
                "node {id} did not win its election"
            )));
        }
        Ok(())
    }

    // ---- convergence -------------------------------------------------------

    /// The members of the configuration the leader (or any node) has applied.
    pub fn members(&self) -> Vec<NodeId> {
        let id = self.leader().or_else(|| self.up_ids().first().copied());
        id.and_then(|id| self.nodes.get(&id)?.raft.as_ref())
            .map(|raft| raft.status().conf_state.members().into_iter().collect())
            .unwrap_or_default()
    }

    /// Checks that every running member has applied the same, complete
    /// committed log: nothing committed was lost, nothing differs.
    pub fn check_converged(&self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Err(Violation::Liveness("no leader".into()));
        };
        let Some(leader_node) = self.nodes.get(&leader) else {
            return Err(Violation::Liveness("leader vanished".into()));
        };
        let expected = &leader_node.kv;
        if expected.applied < self.checker.committed_index {
            return Err(Violation::LostCommit {
                index: self.checker.committed_index,
                copies: 0,
            });
        }
        for id in self.members() {
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            if node.kv != *expected {
                return Err(Violation::Liveness(format!(
                    "node {id} applied up to {} but leader {leader} applied up to {}",
                    node.kv.applied, expected.applied
                )));
            }
        }
        Ok(())
    }

    /// Whether every running member has applied everything the leader
    /// has in its log, with the leader's entry of its term committed.
    pub fn is_settled(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let Some(raft) = self.raft(leader) else {
            return false;
        };
        let last = raft.log.last_index();
        if raft.log.committed != last || raft.log.term(last) != Some(raft.term) {
            return false;
        }
        self.members().iter().all(|&id| match self.nodes.get(&id) {
            Some(node) => node.is_up() && node.kv.applied == last && node.pending_reads.is_empty(),
            None => false,
        })
    }
}

fn decode_read_id(context: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = context.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn describe_entries(entries: &[Entry]) -> String {
    let parts: Vec<String> = entries
        .iter()
        .map(|e| {
            let what = match e.kind {
                EntryKind::ConfChange => "conf".to_string(),
                EntryKind::Normal if e.data.is_empty() => "noop".to_string(),
                EntryKind::Normal => match Write::decode(&e.data) {
                    Some(w) => format!("{}={}", w.key, w.value),
                    None => "data".to_string(),
                },
            };
            format!("{}/{} {what}", e.index, e.term)
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// One line describing a message, for transcripts.
pub fn describe(msg: &Message) -> String {
    let head = format!(
        "{}->{} {} t{}",
        msg.from,
        msg.to,
        msg.body.kind_name(),
        msg.term
    );
    let tail = match &msg.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            transfer,
            ..
        } => format!(
            "last={last_log_index}/{last_log_term}{}",
            if *transfer { " transfer" } else { "" }
        ),
        MessageBody::RequestVoteResponse { reject, .. } => {
            if *reject {
                "REJECT".to_string()
            } else {
                "granted".to_string()
            }
        }
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => format!(
            "prev={prev_log_index}/{prev_log_term} entries={} commit={commit}",
            describe_entries(entries)
        ),
        MessageBody::AppendResponse {
            index,
            reject,
            reject_hint,
            hint_term,
        } => {
            if *reject {
                format!("REJECT index={index} hint={reject_hint}/{hint_term}")
            } else {
                format!("index={index}")
            }
        }
        MessageBody::Heartbeat { commit, read_round } => {
            format!("commit={commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => format!("round={read_round}"),
        MessageBody::InstallSnapshot { snapshot } => {
            format!("index={} term={}", snapshot.meta.index, snapshot.meta.term)
        }
        MessageBody::Propose { entries } => describe_entries(entries),
        MessageBody::ReadIndexResponse { index, .. } => format!("index={index}"),
        MessageBody::TransferLeader { target } => format!("target={target}"),
        MessageBody::ReadIndex { .. } | MessageBody::TimeoutNow => String::new(),
    };
    format!("{head} {tail}")
}
