//! Checking a whole history: split by key, search each key's operations,
//! in parallel, under one time budget.
//!
//! Linearizability is compositional (Herlihy and Wing's locality): a
//! history is linearizable exactly when each key's sub-history is, so keys
//! are independent searches, and the exponential cost is paid per key, not
//! for the whole history.
//!
//! Before searching, operations that cannot matter are dropped: failed
//! ones (not applied), reads with unknown outcome (they constrain nothing),
//! and unknown writes or appends whose value no read ever saw (leaving them
//! out is always at least as good as applying them; for registers only when
//! no CAS could notice them, see `Sightings::unseen_write_is_harmless`).
//!
//! An unknown write, CAS or append whose value a read did see, and which is the
//! only operation writing that value, certainly took effect before that
//! read completed: it is searched as an operation completing then. Left
//! open-ended, it could be tried at every point of the search up to the
//! end of the history, which makes list histories explode.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::history::{History, Input, KeyKind, Operation, Outcome, Output};
use crate::model::{List, ListOp, Model, Register, Values};
use crate::report::{CheckReport, NumberedOp, PartitionReport, StuckOp, Verdict, Violation};
use crate::search::{search, Found, SearchOp, MAX_STATES};

/// Limits of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Wall time for the whole check; keys not decided by then are
    /// [`Verdict::Unknown`].
    pub time_budget: Duration,
    /// Worker threads; 0 means the machine's available parallelism.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            time_budget: Duration::from_secs(60),
            threads: 0,
        }
    }
}

/// One key's operations, as positions in the history.
struct Partition<'h> {
    key: &'h str,
    ops: Vec<usize>,
}

/// Checks that the history is linearizable, key by key: keys holding Read,
/// Write and Cas operations against a register that starts absent, keys
/// holding Append and ReadList operations against a list that starts
/// empty.
///
/// Failed operations never took effect; operations with unknown outcome
/// took effect once at some point after their invocation, or never.
///
/// A key not decided within the time budget, or whose search would
/// remember more than ten million configurations (about a gigabyte), is
/// [`Verdict::Unknown`], with the reason in its report's `error`.
pub fn check(history: &History, options: CheckOptions) -> CheckReport {
    let started = Instant::now();
    let deadline = started
        .checked_add(options.time_budget)
        .unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.operations.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(index);
    }
    let partitions: Vec<Partition<'_>> = by_key
        .into_iter()
        .map(|(key, ops)| Partition { key, ops })
        .collect();
    // Largest first, so one big key does not start last.
    let mut order: Vec<usize> = (0..partitions.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(partitions[i].ops.len()));
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, partitions.len().max(1));
    let next = AtomicUsize::new(0);
    let mut reports: Vec<Option<PartitionReport>> = vec![None; partitions.len()];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let slot = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = order.get(slot) else { break };
                        done.push((i, check_partition(history, &partitions[i], deadline)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            let done = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, report) in done {
                reports[i] = Some(report);
            }
        }
    });
    let partitions: Vec<PartitionReport> = reports.into_iter().flatten().collect();
    let verdict = if partitions
        .iter()
        .any(|p| p.verdict == Verdict::NotLinearizable)
    {
        Verdict::NotLinearizable
    } else if partitions.iter().any(|p| p.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    CheckReport {
        verdict,
        elapsed: started.elapsed(),
        partitions,
    }
}

fn check_partition(
    history: &History,
    partition: &Partition<'_>,
    deadline: Instant,
) -> PartitionReport {
    let started = Instant::now();
    let ops: Vec<&Operation> = partition
        .ops
        .iter()
        .map(|&i| &history.operations[i])
        .collect();
    let mut report = PartitionReport {
        key: partition.key.to_string(),
        operations: ops.len(),
        verdict: Verdict::Unknown,
        elapsed: Duration::ZERO,
        states_explored: 0,
        violation: None,
        error: None,
    };
    if let Err(error) = validate(&ops) {
        report.error = Some(format!("invalid operations: {error}"));
    } else if ops[0].input.key_kind() == KeyKind::Register {
        let sightings = Sightings::of(&ops);
        let fate = |op: &Operation| match &op.input {
            Input::Write { value: written } | Input::Cas { new: written, .. } => {
                sightings.fate(op, written, sightings.unseen_write_is_harmless(op, written))
            }
            _ => Unknown::Open,
        };
        let mut values = Values::default();
        let compiled = compile(&partition.ops, history, &fate, |input, output| {
            Register::compile(&mut values, input, output)
        });
        run(
            Register { values },
            compiled,
            history,
            deadline,
            &mut report,
        );
    } else {
        let sightings = Sightings::of(&ops);
        let fate = |op: &Operation| match &op.input {
            Input::Append { value } => sightings.fate(op, value, true),
            _ => Unknown::Open,
        };
        let mut list = List::default();
        let unseen = list.values.anonymous("(an append no read saw)");
        let compiled = compile(
            &partition.ops,
            history,
            &fate,
            |input, output| match input {
                Input::Append { value }
                    if !sightings.first_seen_by.contains_key(value.as_str()) =>
                {
                    Some(ListOp::Append(unseen))
                }
                _ => List::compile(&mut list.values, input, output),
            },
        );
        for (value, position) in sightings.positions(&ops) {
            let id = list.values.intern(value);
            list.place(id, position);
        }
        run(list, compiled, history, deadline, &mut report);
    }
    report.elapsed = started.elapsed();
    report
}

/// Each operation valid, and all of one kind of key.
fn validate(ops: &[&Operation]) -> Result<(), String> {
    let kind = ops[0].input.key_kind();
    for op in ops {
        op.validate().map_err(|e| e.to_string())?;
        if op.input.key_kind() != kind {
            return Err(format!(
                "the key has both {kind:?} and {:?} operations",
                op.input.key_kind()
            ));
        }
    }
    Ok(())
}

/// What the search does with an operation of unknown outcome.
enum Unknown {
    /// Leave it out: it cannot help.
    Prune,
    /// It must have taken effect by this time (a read saw its value, which
    /// nothing else writes), so it is searched as if it completed then.
    By(u64),
    /// It may take effect at any time after its invocation, or never.
    Open,
}

/// Which values reads saw, and who writes them.
#[derive(Default)]
struct Sightings<'h> {
    /// For each value a completed read returned, the earliest completion of
    /// such a read.
    first_seen_by: HashMap<&'h str, u64>,
    /// For each value, how many operations not known to have failed write it.
    writers: HashMap<&'h str, usize>,
    /// The values some CAS compares with.
    cas_expects: HashSet<&'h str>,
    /// The latest completion of a CAS that answered "failed".
    last_failed_cas_ns: Option<u64>,
}

impl<'h> Sightings<'h> {
    fn of(ops: &[&'h Operation]) -> Self {
        let mut sightings = Sightings::default();
        for op in ops {
            let written = match &op.input {
                Input::Write { value } | Input::Append { value } => Some(value),
                Input::Cas { new, .. } => Some(new),
                Input::Read | Input::ReadList => None,
            };
            if let (Some(value), false) = (written, op.outcome == Outcome::Fail) {
                *sightings.writers.entry(value.as_str()).or_default() += 1;
            }
            if let Input::Cas {
                expected: Some(expected),
                ..
            } = &op.input
            {
                sightings.cas_expects.insert(expected.as_str());
            }
            if let (Outcome::Ok(Output::Cas { succeeded: false }), Some(complete_ns)) =
                (&op.outcome, op.complete_ns)
            {
                sightings.last_failed_cas_ns = sightings.last_failed_cas_ns.max(Some(complete_ns));
            }
            let (Outcome::Ok(output), Some(complete_ns)) = (&op.outcome, op.complete_ns) else {
                continue;
            };
            let seen: &[String] = match output {
                Output::Read { value: Some(value) } => std::slice::from_ref(value),
                Output::ReadList { values } => values,
                _ => &[],
            };
            for value in seen {
                let first = sightings
                    .first_seen_by
                    .entry(value.as_str())
                    .or_insert(complete_ns);
                *first = (*first).min(complete_ns);
            }
        }
        sightings
    }

    /// Where the first read showing each value (written by one operation
    /// only) shows it.
    fn positions(&self, ops: &[&'h Operation]) -> HashMap<&'h str, usize> {
        let mut positions = HashMap::new();
        for op in ops {
            if let Outcome::Ok(Output::ReadList { values }) = &op.outcome {
                for (position, value) in values.iter().enumerate() {
                    if self.writers.get(value.as_str()) == Some(&1) {
                        positions.entry(value.as_str()).or_insert(position);
                    }
                }
            }
        }
        positions
    }

    /// Whether an unknown register write (or CAS) of `value` that no read
    /// saw may be left out. Applied, it leaves a value nothing observes
    /// until the next write: no read returns it, no CAS expects it, and no
    /// CAS that answered "failed" completes after it was invoked (a failure
    /// it could explain). Removing it (and any unknown CAS it made a no-op)
    /// then leaves every answer explained.
    fn unseen_write_is_harmless(&self, op: &Operation, value: &str) -> bool {
        !self.cas_expects.contains(value)
            && self
                .last_failed_cas_ns
                .is_none_or(|failed_ns| failed_ns < op.invoke_ns)
    }

    /// The fate of an unknown operation writing `value`; `may_prune` when
    /// an unseen write can matter to no other operation.
    fn fate(&self, op: &Operation, value: &str, may_prune: bool) -> Unknown {
        match self.first_seen_by.get(value) {
            // A return before the call would corrupt the event order; the
            // read that saw the value before it was written fails anyway.
            Some(&seen_ns) if self.writers.get(value) == Some(&1) => {
                Unknown::By(seen_ns.max(op.invoke_ns))
            }
            Some(_) => Unknown::Open,
            None if may_prune => Unknown::Prune,
            None => Unknown::Open,
        }
    }
}

/// The search's operations, each with its position in the history.
fn compile<O>(
    indexes: &[usize],
    history: &History,
    fate: &dyn Fn(&Operation) -> Unknown,
    mut to_model: impl FnMut(&Input, Option<&Output>) -> Option<O>,
) -> Vec<(usize, SearchOp<O>)> {
    let mut compiled = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let op = &history.operations[index];
        let (output, complete_ns) = match &op.outcome {
            Outcome::Fail => continue,
            Outcome::Unknown => match fate(op) {
                Unknown::Prune => continue,
                Unknown::By(complete_ns) => (None, Some(complete_ns)),
                Unknown::Open => (None, None),
            },
            Outcome::Ok(output) => (Some(output), op.complete_ns),
        };
        if let Some(model_op) = to_model(&op.input, output) {
            compiled.push((
                index,
                SearchOp {
                    op: model_op,
                    invoke_ns: op.invoke_ns,
                    complete_ns,
                },
            ));
        }
    }
    compiled
}

fn run<M: Model>(
    model: M,
    compiled: Vec<(usize, SearchOp<M::Op>)>,
    history: &History,
    deadline: Instant,
    report: &mut PartitionReport,
) {
    let (sources, ops): (Vec<usize>, Vec<SearchOp<M::Op>>) = compiled.into_iter().unzip();
    let result = search(&model, &ops, deadline);
    report.states_explored = result.states_explored;
    report.verdict = match result.found {
        Found::Linearizable => Verdict::Linearizable,
        Found::OutOfTime => {
            report.error = Some("the time budget ran out".to_string());
            Verdict::Unknown
        }
        Found::OutOfStates => {
            report.error = Some(format!(
                "the search reached its limit of {MAX_STATES} states"
            ));
            Verdict::Unknown
        }
        Found::NotLinearizable(deepest) => {
            let numbered = |op: usize| NumberedOp {
                number: sources[op] + 1,
                operation: history.operations[sources[op]].clone(),
            };
            let stuck = deepest
                .candidates
                .iter()
                .map(|&op| StuckOp {
                    op: numbered(op),
                    reason: match model.step(&deepest.state, &ops[op].op) {
                        None => model.refusal(&deepest.state, &ops[op].op),
                        Some(_) => "allowed here, but then the remaining operations \
                                    cannot all be linearized"
                            .to_string(),
                    },
                })
                .collect();
            report.violation = Some(Violation {
                required: ops.iter().filter(|op| op.complete_ns.is_some()).count(),
                linearized: deepest.prefix.iter().map(|&op| numbered(op)).collect(),
                state: model.describe(&deepest.state),
                stuck,
            });
            Verdict::NotLinearizable
        }
    };
}
