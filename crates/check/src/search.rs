//! The search for a linearization of one partition's operations: Wing and
//! Gong's backtracking over call and return events, with Lowe's
//! memoization of (operations linearized, state) pairs.
//!
//! The events form a doubly linked list in time order (calls before returns
//! at equal times, so touching operations count as concurrent). Scanning
//! from the front, a call may be linearized next if the model accepts it:
//! its call and return are lifted out of the list and the scan restarts.
//! Reaching a return means its operation had to be linearized already, so
//! the last choice is undone. A configuration seen before (same set, same
//! state) cannot lead anywhere new, which is what makes the search
//! practical.
//!
//! An operation with an unknown outcome has no return event: it may be
//! linearized at any point after its call, or never. The search succeeds as
//! soon as every completed operation is linearized.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::model::Model;

/// One operation as the search sees it.
#[derive(Debug)]
pub(crate) struct SearchOp<O> {
    /// The model operation.
    pub op: O,
    /// Invocation time.
    pub invoke_ns: u64,
    /// Completion time; `None` when the outcome is unknown.
    pub complete_ns: Option<u64>,
}

/// Where the search got furthest before failing.
#[derive(Debug)]
pub(crate) struct Deepest<S> {
    /// The operations linearized, in order (indices into the search's ops).
    pub prefix: Vec<usize>,
    /// The state after them.
    pub state: S,
    /// The completed operations that could have come next, none of which
    /// leads to a full linearization; the one that must come first (its
    /// return is the earliest) is first.
    pub candidates: Vec<usize>,
}

/// What the search decided.
#[derive(Debug)]
pub(crate) enum Found<S> {
    /// Every completed operation was linearized.
    Linearizable,
    /// No order works.
    NotLinearizable(Deepest<S>),
    /// The deadline passed first.
    OutOfTime,
    /// The search remembered [`MAX_STATES`] configurations first.
    OutOfStates,
}

/// The result of a search and its cost.
#[derive(Debug)]
pub(crate) struct SearchResult<S> {
    /// The decision.
    pub found: Found<S>,
    /// Distinct (linearized set, state) configurations reached.
    pub states_explored: u64,
}

/// The most (linearized set, state) configurations one search remembers:
/// about a gigabyte. Beyond it the key is undecided rather than the
/// machine out of memory.
pub(crate) const MAX_STATES: usize = 10_000_000;

/// How often (in loop iterations) the clock is read.
const DEADLINE_CHECK_EVERY: u64 = 1 << 10;
const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// Which operations are linearized.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(bits: usize) -> Self {
        Bitset(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }
    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

/// FxHash: the memo table hashes small integers and short slices of them,
/// for which SipHash's protection against chosen keys only costs time.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The events in time order, as a doubly linked list over arrays; node 0 is
/// the head sentinel.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each node.
    op: Vec<usize>,
    /// For a call node, its return node (`NIL` for an unknown outcome); for
    /// a return node, `NIL`.
    ret: Vec<usize>,
    is_call: Vec<bool>,
}

impl Events {
    fn new<O>(ops: &[SearchOp<O>]) -> Self {
        // (time, 0 for a call / 1 for a return, op)
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke_ns, 0, i));
            if let Some(complete_ns) = op.complete_ns {
                events.push((complete_ns, 1, i));
            }
        }
        events.sort_unstable();
        let nodes = events.len() + 1;
        let mut list = Events {
            next: (1..=nodes)
                .map(|n| if n == nodes { NIL } else { n })
                .collect(),
            prev: (0..nodes).map(|n| n.wrapping_sub(1)).collect(),
            op: vec![NIL; nodes],
            ret: vec![NIL; nodes],
            is_call: vec![false; nodes],
        };
        let mut call_node = vec![NIL; ops.len()];
        for (n, &(_, kind, op)) in events.iter().enumerate() {
            let node = n + 1;
            list.op[node] = op;
            if kind == 0 {
                list.is_call[node] = true;
                call_node[op] = node;
            } else {
                list.ret[call_node[op]] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Undoes `unlink(node)`; unlinks must be undone in reverse order.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if self.ret[call] != NIL {
            self.unlink(self.ret[call]);
        }
    }

    fn unlift(&mut self, call: usize) {
        if self.ret[call] != NIL {
            self.relink(self.ret[call]);
        }
        self.relink(call);
    }

    /// The completed operations whose calls come before the first return
    /// still in the list, that return's operation first.
    fn candidates<O>(&self, ops: &[SearchOp<O>]) -> Vec<usize> {
        let mut calls = Vec::new();
        let mut node = self.next[HEAD];
        while node != NIL && self.is_call[node] {
            if ops[self.op[node]].complete_ns.is_some() {
                calls.push(self.op[node]);
            }
            node = self.next[node];
        }
        if node != NIL {
            let first = self.op[node];
            calls.retain(|&op| op != first);
            calls.insert(0, first);
        }
        calls
    }
}

/// Searches for a linearization of `ops` under `model`, giving up at
/// `deadline`.
pub(crate) fn search<M: Model>(
    model: &M,
    ops: &[SearchOp<M::Op>],
    deadline: Instant,
) -> SearchResult<M::State> {
    let completed = ops.iter().filter(|op| op.complete_ns.is_some()).count();
    let mut result = SearchResult {
        found: Found::Linearizable,
        states_explored: 0,
    };
    if completed == 0 {
        return result;
    }
    let mut events = Events::new(ops);
    let mut memo: HashSet<(Bitset, M::State), BuildHasherDefault<FxHasher>> = HashSet::default();
    let mut linearized = Bitset::new(ops.len());
    let mut linearized_completed = 0usize;
    let mut state = model.init();
    // The calls linearized, with the state before each.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut deepest = Deepest {
        prefix: Vec::new(),
        state: state.clone(),
        candidates: events.candidates(ops),
    };
    let mut deepest_completed = 0usize;
    let mut node = events.next[HEAD];
    let mut iterations = 0u64;
    loop {
        iterations += 1;
        if iterations.is_multiple_of(DEADLINE_CHECK_EVERY) && Instant::now() >= deadline {
            result.found = Found::OutOfTime;
            break;
        }
        if memo.len() >= MAX_STATES {
            result.found = Found::OutOfStates;
            break;
        }
        if node != NIL && events.is_call[node] {
            let op = events.op[node];
            if let Some(next_state) = model.step(&state, &ops[op].op) {
                linearized.set(op);
                if memo.insert((linearized.clone(), next_state.clone())) {
                    stack.push((node, std::mem::replace(&mut state, next_state)));
                    events.lift(node);
                    if ops[op].complete_ns.is_some() {
                        linearized_completed += 1;
                        if linearized_completed == completed {
                            break;
                        }
                        if linearized_completed > deepest_completed {
                            deepest_completed = linearized_completed;
                            deepest = Deepest {
                                prefix: stack.iter().map(|&(call, _)| events.op[call]).collect(),
                                state: state.clone(),
                                candidates: events.candidates(ops),
                            };
                        }
                    }
                    node = events.next[HEAD];
                    continue;
                }
                linearized.clear(op);
            }
            node = events.next[node];
            continue;
        }
        // A return (or, defensively, the end of the list): undo the last
        // choice and try the next call after it.
        let Some((call, before)) = stack.pop() else {
            result.found = Found::NotLinearizable(deepest);
            break;
        };
        let op = events.op[call];
        linearized.clear(op);
        if ops[op].complete_ns.is_some() {
            linearized_completed -= 1;
        }
        state = before;
        events.unlift(call);
        node = events.next[call];
    }
    result.states_explored = memo.len() as u64;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Register, RegisterOp, Values};
    use std::time::Duration;

    fn op(op: RegisterOp, invoke_ns: u64, complete_ns: Option<u64>) -> SearchOp<RegisterOp> {
        SearchOp {
            op,
            invoke_ns,
            complete_ns,
        }
    }

    fn run(ops: &[SearchOp<RegisterOp>]) -> Found<Option<u32>> {
        let register = Register {
            values: Values::default(),
        };
        search(&register, ops, Instant::now() + Duration::from_secs(10)).found
    }

    #[test]
    fn the_deepest_prefix_and_the_blocked_read_are_reported() {
        // write 1, then write 2, then a read of 1 that starts after both.
        let ops = [
            op(RegisterOp::Write(1), 0, Some(10)),
            op(RegisterOp::Write(2), 20, Some(30)),
            op(RegisterOp::Read(Some(1)), 40, Some(50)),
        ];
        let Found::NotLinearizable(deepest) = run(&ops) else {
            panic!("stale read accepted");
        };
        assert_eq!(deepest.prefix, vec![0, 1]);
        assert_eq!(deepest.state, Some(2));
        assert_eq!(deepest.candidates, vec![2]);
    }

    #[test]
    fn touching_operations_are_concurrent() {
        let ops = [
            op(RegisterOp::Write(1), 0, Some(10)),
            op(RegisterOp::Read(None), 10, Some(20)),
        ];
        assert!(matches!(run(&ops), Found::Linearizable));
    }
}
