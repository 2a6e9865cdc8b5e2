//! The simulated network: messages in flight with delivery times, and the
//! faults a real network produces (loss, delay, reordering, duplication,
//! symmetric and one-way partitions).

use std::collections::BTreeSet;

use raftkv_raft::{Message, NodeId};
use rand::rngs::SmallRng;
use rand::Rng;

/// How unreliable the network is. Probabilities are per message.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkFaults {
    /// Chance that a message is lost.
    pub drop: f64,
    /// Chance that a message is delivered twice.
    pub duplicate: f64,
    /// Smallest delivery delay, in simulation steps.
    pub delay_min: u64,
    /// Largest delivery delay; a wide range reorders messages.
    pub delay_max: u64,
}

impl NetworkFaults {
    /// A network that delivers everything, in order, after one step.
    pub fn reliable() -> Self {
        Self {
            drop: 0.0,
            duplicate: 0.0,
            delay_min: 1,
            delay_max: 1,
        }
    }
}

/// A message and the step at which it arrives.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// When the message is delivered.
    pub deliver_at: u64,
    /// Send order, to keep delivery deterministic among equal times.
    pub seq: u64,
    /// The message.
    pub msg: Message,
}

/// Messages in flight and the links that are cut.
#[derive(Debug)]
pub struct Network {
    in_flight: Vec<InFlight>,
    /// Directed links `(from, to)` that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Current fault settings.
    pub faults: NetworkFaults,
    next_seq: u64,
}

/// What happened to a message handed to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for delivery.
    Queued,
    /// Queued twice.
    Duplicated,
    /// Lost at random.
    Dropped,
    /// Lost on a cut link.
    Cut,
}

impl Network {
    /// An empty network with the given faults.
    pub fn new(faults: NetworkFaults) -> Self {
        Self {
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            faults,
            next_seq: 0,
        }
    }

    /// Hands a message to the network at step `now`.
    pub fn send(&mut self, msg: Message, now: u64, rng: &mut SmallRng) -> SendOutcome {
        if self.cut.contains(&(msg.from, msg.to)) {
            return SendOutcome::Cut;
        }
        if self.faults.drop > 0.0 && rng.gen_bool(self.faults.drop) {
            return SendOutcome::Dropped;
        }
        let copies = if self.faults.duplicate > 0.0 && rng.gen_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = rng.gen_range(
                self.faults.delay_min..=self.faults.delay_max.max(self.faults.delay_min),
            );
            self.next_seq += 1;
            self.in_flight.push(InFlight {
                deliver_at: now + delay,
                seq: self.next_seq,
                msg: msg.clone(),
            });
        }
        if copies == 2 {
            SendOutcome::Duplicated
        } else {
            SendOutcome::Queued
        }
    }

    /// Removes the messages due at or before `now` and returns them in
    /// delivery order, split into those delivered and those lost because
    /// their link was cut while they were in flight.
    pub fn take_due(&mut self, now: u64) -> (Vec<Message>, Vec<Message>) {
        let mut due: Vec<InFlight> = Vec::new();
        let mut keep = Vec::with_capacity(self.in_flight.len());
        for item in self.in_flight.drain(..) {
            if item.deliver_at <= now {
                due.push(item);
            } else {
                keep.push(item);
            }
        }
        self.in_flight = keep;
        due.sort_by_key(|item| (item.deliver_at, item.seq));
        let (lost, delivered): (Vec<InFlight>, Vec<InFlight>) = due
            .into_iter()
            .partition(|item| self.cut.contains(&(item.msg.from, item.msg.to)));
        (
            delivered.into_iter().map(|item| item.msg).collect(),
            lost.into_iter().map(|item| item.msg).collect(),
        )
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// All messages in flight, oldest first (for scripted tests).
    pub fn pending(&self) -> impl Iterator<Item = &Message> {
        self.in_flight.iter().map(|item| &item.msg)
    }

    /// Removes the in-flight messages matching `pick` and returns them.
    pub fn take_matching(&mut self, mut pick: impl FnMut(&Message) -> bool) -> Vec<Message> {
        let mut taken = Vec::new();
        let mut keep = Vec::with_capacity(self.in_flight.len());
        for item in self.in_flight.drain(..) {
            if pick(&item.msg) {
                taken.push(item);
            } else {
                keep.push(item);
            }
        }
        self.in_flight = keep;
        taken.sort_by_key(|item| item.seq);
        taken.into_iter().map(|item| item.msg).collect()
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, left: &[NodeId], right: &[NodeId]) {
        for &a in left {
            for &b in right {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn has_cuts(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Drops and returns everything in flight to `id` (its process died;
    /// what it sent is already on the wire and still arrives).
    pub fn forget_node(&mut self, id: NodeId) -> Vec<Message> {
        self.take_matching(|msg| msg.to == id)
    }
}
