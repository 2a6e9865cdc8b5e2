//! What a linearizability check found, for a person (`Display`) and for a
//! program (serde JSON).
//!
//! A violation is explained by the furthest the search got: the operations
//! it could linearize, the state they leave, and the operations of which
//! none could come next, each with the reason the model gives. That is
//! usually enough to read a bug off: "read returned "3" but the value was
//! "5"" after a prefix ending with the write of 5.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::history::{Input, Operation, Outcome, Output};

/// The decision for a history or one of its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Some order consistent with real time explains every answer.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// Not decided: the time budget ran out, or the key's operations are
    /// not a valid history. Never a pass.
    Unknown,
}

/// The result of checking a whole history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// NotLinearizable if any key is, else Unknown if any key is, else
    /// Linearizable.
    pub verdict: Verdict,
    /// Wall time of the whole check.
    #[serde(rename = "elapsed_us", serialize_with = "micros")]
    pub elapsed: Duration,
    /// One report per key, in key order.
    pub partitions: Vec<PartitionReport>,
}

/// The result for one key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartitionReport {
    /// The key.
    pub key: String,
    /// Operations on the key in the history (all outcomes).
    pub operations: usize,
    /// The decision.
    pub verdict: Verdict,
    /// Wall time spent on this key.
    #[serde(rename = "elapsed_us", serialize_with = "micros")]
    pub elapsed: Duration,
    /// Distinct (linearized set, state) configurations the search reached.
    pub states_explored: u64,
    /// For NotLinearizable, how far the search got and what blocked it.
    pub violation: Option<Violation>,
    /// For an Unknown key, why it is undecided: the time budget ran out,
    /// the search hit its state limit, or the operations are invalid.
    pub error: Option<String>,
}

/// The furthest point of a failed search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// Operations on the key that had to be linearized: the completed ones,
    /// and those of unknown outcome a read proved applied.
    pub required: usize,
    /// The longest linearizable prefix found, in linearization order
    /// (operations with unknown outcome that took effect included).
    pub linearized: Vec<NumberedOp>,
    /// The state after that prefix, in words.
    pub state: String,
    /// The completed operations that could have come next; none does. The
    /// first is the one that returned earliest.
    pub stuck: Vec<StuckOp>,
}

/// An operation with its position in the history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NumberedOp {
    /// Position in the history, counted from 1 (its line in a JSON Lines
    /// file without blank lines).
    pub number: usize,
    /// The operation.
    pub operation: Operation,
}

/// An operation that could not come next, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StuckOp {
    /// The operation.
    #[serde(flatten)]
    pub op: NumberedOp,
    /// Why not, in words.
    pub reason: String,
}

fn micros<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_micros().min(u128::from(u64::MAX)) as u64)
}

/// How many operations of the linearized prefix `Display` shows.
const PREFIX_SHOWN: usize = 10;

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "NOT linearizable",
            Verdict::Unknown => "unknown",
        })
    }
}

fn ms(ns: u64) -> String {
    // Nanosecond resolution in one unit, so times compare at a glance.
    format!("{}.{:06}ms", ns / 1_000_000, ns % 1_000_000)
}

fn quote(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    }
}

impl fmt::Display for NumberedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = &self.operation;
        let complete = op.complete_ns.map_or_else(|| "?".to_string(), ms);
        write!(
            f,
            "#{} process {} [{} .. {}] ",
            self.number,
            op.process,
            ms(op.invoke_ns),
            complete
        )?;
        match &op.input {
            Input::Read => write!(f, "read")?,
            Input::Write { value } => write!(f, "write {value:?}")?,
            Input::Cas { expected, new } => write!(f, "cas {} -> {new:?}", quote(expected))?,
            Input::Append { value } => write!(f, "append {value:?}")?,
            Input::ReadList => write!(f, "read list")?,
        }
        match &op.outcome {
            Outcome::Ok(Output::Read { value }) => write!(f, " = {}", quote(value)),
            Outcome::Ok(Output::Cas { succeeded }) => {
                write!(f, " = {}", if *succeeded { "succeeded" } else { "failed" })
            }
            Outcome::Ok(Output::ReadList { values }) => write!(f, " = {values:?}"),
            Outcome::Ok(_) => write!(f, " = ok"),
            Outcome::Fail => write!(f, " = fail"),
            Outcome::Unknown => write!(f, " = unknown"),
        }
    }
}

impl fmt::Display for PartitionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: {} ({} operations, {} states, {:.1?})",
            self.key, self.verdict, self.operations, self.states_explored, self.elapsed
        )?;
        if let Some(reason) = &self.error {
            writeln!(f, "  undecided: {reason}")?;
        }
        if let Some(violation) = &self.violation {
            let shown = violation.linearized.len().min(PREFIX_SHOWN);
            writeln!(
                f,
                "  {} operations had to be linearized; the longest linearizable prefix has {}{}",
                violation.required,
                violation.linearized.len(),
                if shown < violation.linearized.len() {
                    format!(", its last {shown}:")
                } else {
                    ":".to_string()
                }
            )?;
            for op in &violation.linearized[violation.linearized.len() - shown..] {
                writeln!(f, "    {op}")?;
            }
            writeln!(f, "  after it: {}", violation.state)?;
            writeln!(f, "  none of these can be linearized next:")?;
            for stuck in &violation.stuck {
                writeln!(f, "    {}\n      {}", stuck.op, stuck.reason)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |verdict| {
            self.partitions
                .iter()
                .filter(|p| p.verdict == verdict)
                .count()
        };
        writeln!(
            f,
            "{}: {} keys, {} operations, checked in {:.1?} ({} not linearizable, {} unknown)",
            self.verdict,
            self.partitions.len(),
            self.partitions.iter().map(|p| p.operations).sum::<usize>(),
            self.elapsed,
            count(Verdict::NotLinearizable),
            count(Verdict::Unknown),
        )?;
        for partition in &self.partitions {
            if partition.verdict != Verdict::Linearizable {
                write!(f, "{partition}")?;
            }
        }
        Ok(())
    }
}
