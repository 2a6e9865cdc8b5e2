//! The sequential specifications a history is checked against: a register
//! and a list, starting absent and empty.
//!
//! The search calls [`Model::step`] millions of times and hashes every state
//! it reaches, so models work on values interned to small integers
//! ([`Values`]) rather than on strings; the strings come back only to
//! explain a violation.

use std::fmt::Debug;
use std::hash::Hash;

use crate::history::{Input, Output};

/// An interned value: an index into [`Values`].
pub(crate) type ValueId = u32;

/// The strings of one partition, interned.
#[derive(Default, Debug)]
pub(crate) struct Values {
    strings: Vec<String>,
    ids: std::collections::HashMap<String, ValueId>,
}

impl Values {
    /// The id of `value`, interning it on first sight.
    pub(crate) fn intern(&mut self, value: &str) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.strings.len() as ValueId;
        self.strings.push(value.to_string());
        self.ids.insert(value.to_string(), id);
        id
    }

    /// A new id standing for no particular value, shown as `label`: one for
    /// all the appends no read saw, whose order then does not multiply the
    /// states of the search.
    pub(crate) fn anonymous(&mut self, label: &str) -> ValueId {
        self.strings.push(label.to_string());
        (self.strings.len() - 1) as ValueId
    }

    /// The string of an id this table gave out.
    pub(crate) fn get(&self, id: ValueId) -> &str {
        &self.strings[id as usize]
    }

    fn quote(&self, value: Option<ValueId>) -> String {
        match value {
            Some(id) if !self.ids.contains_key(self.get(id)) => self.get(id).to_string(),
            Some(id) => format!("{:?}", self.get(id)),
            None => "absent".to_string(),
        }
    }

    fn quote_list(&self, values: &[ValueId]) -> String {
        let items: Vec<String> = values.iter().map(|&v| self.quote(Some(v))).collect();
        format!("[{}]", items.join(", "))
    }
}

/// A sequential object: its states and how each operation changes them.
pub(crate) trait Model {
    /// A state of the object; the search memoizes them.
    type State: Clone + Eq + Hash + Debug;
    /// One operation with its observed answer (or none, if unknown).
    type Op: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The state after `op` applied to `state`, or `None` if `op`'s answer
    /// is impossible in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
    /// Why `step` refuses `op` in `state`, in words, for a report.
    fn refusal(&self, state: &Self::State, op: &Self::Op) -> String;
    /// The state in words.
    fn describe(&self, state: &Self::State) -> String;
}

/// A register operation; `succeeded: None` is a CAS with unknown outcome.
#[derive(Debug, Clone)]
pub(crate) enum RegisterOp {
    Read(Option<ValueId>),
    Write(ValueId),
    Cas {
        expected: Option<ValueId>,
        new: ValueId,
        succeeded: Option<bool>,
    },
}

/// A register: reads return the current value, writes set it, a CAS sets it
/// exactly when the current value equals the expected one (absent included).
#[derive(Debug)]
pub(crate) struct Register {
    pub(crate) values: Values,
}

impl Register {
    /// The register operation of an input and its answer (`None` when the
    /// outcome is unknown); `None` for an unknown read, which constrains
    /// nothing.
    pub(crate) fn compile(
        values: &mut Values,
        input: &Input,
        output: Option<&Output>,
    ) -> Option<RegisterOp> {
        Some(match (input, output) {
            (Input::Read, Some(Output::Read { value })) => {
                RegisterOp::Read(value.as_deref().map(|v| values.intern(v)))
            }
            (Input::Write { value }, _) => RegisterOp::Write(values.intern(value)),
            (Input::Cas { expected, new }, output) => RegisterOp::Cas {
                expected: expected.as_deref().map(|v| values.intern(v)),
                new: values.intern(new),
                succeeded: match output {
                    Some(Output::Cas { succeeded }) => Some(*succeeded),
                    _ => None,
                },
            },
            _ => return None,
        })
    }
}

impl Model for Register {
    type State = Option<ValueId>;
    type Op = RegisterOp;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, state: &Self::State, op: &RegisterOp) -> Option<Self::State> {
        match *op {
            RegisterOp::Read(value) => (value == *state).then_some(*state),
            RegisterOp::Write(value) => Some(Some(value)),
            RegisterOp::Cas {
                expected,
                new,
                succeeded,
            } => {
                let holds = *state == expected;
                match succeeded {
                    Some(claimed) if claimed != holds => None,
                    _ => Some(if holds { Some(new) } else { *state }),
                }
            }
        }
    }

    fn refusal(&self, state: &Self::State, op: &RegisterOp) -> String {
        let now = self.values.quote(*state);
        match *op {
            RegisterOp::Read(value) => format!(
                "read returned {} but the value was {now}",
                self.values.quote(value)
            ),
            RegisterOp::Cas {
                expected,
                succeeded: Some(true),
                ..
            } => format!(
                "cas succeeded but the value was {now}, not the expected {}",
                self.values.quote(expected)
            ),
            RegisterOp::Cas {
                succeeded: Some(false),
                ..
            } => format!("cas failed but the value was {now}, as it expected"),
            _ => format!("allowed when the value is {now}"),
        }
    }

    fn describe(&self, state: &Self::State) -> String {
        format!("value {}", self.values.quote(*state))
    }
}

/// A list operation.
#[derive(Debug, Clone)]
pub(crate) enum ListOp {
    Append(ValueId),
    Read(Vec<ValueId>),
}

/// A list: appends push at the end, a read returns the whole list.
///
/// Reads see whole lists, and a list only grows, so a value some read shows
/// at position `p` (appended by one operation only) must have been appended
/// when the list had `p` elements: the model refuses it anywhere else. This
/// is implied by the reads, so it changes no verdict, but it stops the
/// search from trying every order of a run of concurrent appends that only
/// a later read tells apart.
#[derive(Debug, Default)]
pub(crate) struct List {
    pub(crate) values: Values,
    /// By value id: where reads put the value, or `usize::MAX`.
    positions: Vec<usize>,
}

impl List {
    /// Records that reads show `value` at `position`.
    pub(crate) fn place(&mut self, value: ValueId, position: usize) {
        let index = value as usize;
        if self.positions.len() <= index {
            self.positions.resize(index + 1, usize::MAX);
        }
        self.positions[index] = position;
    }

    fn position(&self, value: ValueId) -> Option<usize> {
        self.positions
            .get(value as usize)
            .copied()
            .filter(|&p| p != usize::MAX)
    }

    /// The list operation of an input and its answer (`None` when unknown);
    /// `None` for an unknown read.
    pub(crate) fn compile(
        values: &mut Values,
        input: &Input,
        output: Option<&Output>,
    ) -> Option<ListOp> {
        Some(match (input, output) {
            (Input::Append { value }, _) => ListOp::Append(values.intern(value)),
            (Input::ReadList, Some(Output::ReadList { values: read })) => {
                ListOp::Read(read.iter().map(|v| values.intern(v)).collect())
            }
            _ => return None,
        })
    }
}

impl Model for List {
    type State = Vec<ValueId>;
    type Op = ListOp;

    fn init(&self) -> Self::State {
        Vec::new()
    }

    fn step(&self, state: &Self::State, op: &ListOp) -> Option<Self::State> {
        match op {
            ListOp::Append(value) => {
                if self.position(*value).is_some_and(|p| p != state.len()) {
                    return None;
                }
                let mut next = Vec::with_capacity(state.len() + 1);
                next.extend_from_slice(state);
                next.push(*value);
                Some(next)
            }
            ListOp::Read(values) => (values == state).then(|| state.clone()),
        }
    }

    fn refusal(&self, state: &Self::State, op: &ListOp) -> String {
        match op {
            ListOp::Read(values) => format!(
                "read {} but the list was {}",
                self.values.quote_list(values),
                self.values.quote_list(state)
            ),
            ListOp::Append(value) => match self.position(*value) {
                Some(p) => format!(
                    "reads show {} at position {p}, but the list has {} elements here",
                    self.values.quote(Some(*value)),
                    state.len()
                ),
                None => "an append is always allowed".to_string(),
            },
        }
    }

    fn describe(&self, state: &Self::State) -> String {
        format!("list {}", self.values.quote_list(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_cas_claims_must_match_the_comparison() {
        let register = Register {
            values: Values::default(),
        };
        let cas = |succeeded| RegisterOp::Cas {
            expected: None,
            new: 1,
            succeeded,
        };
        assert_eq!(register.step(&None, &cas(Some(true))), Some(Some(1)));
        assert_eq!(register.step(&None, &cas(Some(false))), None);
        assert_eq!(register.step(&Some(2), &cas(Some(false))), Some(Some(2)));
        assert_eq!(register.step(&Some(2), &cas(Some(true))), None);
        assert_eq!(register.step(&Some(2), &cas(None)), Some(Some(2)));
        assert_eq!(register.step(&None, &cas(None)), Some(Some(1)));
    }

    #[test]
    fn list_reads_see_the_whole_list_in_order() {
        let mut list = List::default();
        let state = list.step(&vec![1], &ListOp::Append(2)).unwrap();
        assert_eq!(state, vec![1, 2]);
        assert!(list.step(&state, &ListOp::Read(vec![1, 2])).is_some());
        assert!(list.step(&state, &ListOp::Read(vec![2, 1])).is_none());
        assert!(list.step(&state, &ListOp::Read(vec![1])).is_none());
        list.place(3, 1);
        assert!(list.step(&vec![], &ListOp::Append(3)).is_none());
        assert_eq!(list.step(&vec![1], &ListOp::Append(3)), Some(vec![1, 3]));
    }
}
