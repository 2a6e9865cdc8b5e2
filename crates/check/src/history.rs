//! The recorded history of client operations, and its file format.
//!
//! A history is what the clients saw, nothing more: each operation's key,
//! request, invocation and completion times and outcome. It is the only
//! input of the linearizability checker, so the chaos harness and a person
//! with a saved file hand it the same thing.
//!
//! # File format
//!
//! JSON Lines: one [`Operation`] per line, in any order (blank lines are
//! skipped). For example, an acknowledged write and a read that timed out:
//!
//! ```text
//! {"process":1,"key":"x","input":{"type":"write","value":"5"},"invoke_ns":100,"complete_ns":250,"outcome":{"status":"ok","output":{"type":"write"}}}
//! {"process":2,"key":"x","input":{"type":"read"},"invoke_ns":120,"complete_ns":null,"outcome":{"status":"unknown"}}
//! ```
//!
//! Times are nanoseconds of one monotonic clock since the history's start.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a client asked, on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// Register read.
    Read,
    /// Register write.
    Write {
        /// The value written.
        value: String,
    },
    /// Compare-and-set on a register.
    Cas {
        /// The value the key must hold; `None` means the key must be absent.
        expected: Option<String>,
        /// The value written when the comparison holds.
        new: String,
    },
    /// Append to a list.
    Append {
        /// The element appended.
        value: String,
    },
    /// Read a whole list.
    ReadList,
}

/// What came back for an operation that completed successfully.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// The register's value; `None` when the key was absent.
    Read {
        /// The value read.
        value: Option<String>,
    },
    /// The write was applied.
    Write,
    /// Whether the comparison held (and the new value was written).
    Cas {
        /// True when the new value was written.
        succeeded: bool,
    },
    /// The append was applied.
    Append,
    /// The list's elements, oldest first.
    ReadList {
        /// The elements read.
        values: Vec<String>,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", content = "output", rename_all = "snake_case")]
pub enum Outcome {
    /// Completed, with this answer.
    Ok(Output),
    /// Definitely not applied (the server refused it before it took effect).
    Fail,
    /// May or may not have taken effect, at any time after its invocation
    /// (a timeout, a lost connection).
    Unknown,
}

/// One client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// The client (worker) that issued it; a process has at most one
    /// operation in flight.
    pub process: u64,
    /// The key: operations on different keys are checked independently.
    pub key: String,
    /// What was asked.
    pub input: Input,
    /// Monotonic nanoseconds since the history's start, at invocation.
    pub invoke_ns: u64,
    /// Monotonic nanoseconds at completion; `None` when the outcome is
    /// [`Outcome::Unknown`] (a value there must not precede `invoke_ns`
    /// and is otherwise ignored).
    #[serde(default)]
    pub complete_ns: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Whether a key holds a register or a list; one key is never both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Read, Write and Cas operations.
    Register,
    /// Append and ReadList operations.
    List,
}

impl Input {
    /// The kind of key this input applies to.
    pub fn key_kind(&self) -> KeyKind {
        match self {
            Input::Read | Input::Write { .. } | Input::Cas { .. } => KeyKind::Register,
            Input::Append { .. } | Input::ReadList => KeyKind::List,
        }
    }

    /// Whether `output` is an answer of the kind this input gets.
    pub fn matches(&self, output: &Output) -> bool {
        matches!(
            (self, output),
            (Input::Read, Output::Read { .. })
                | (Input::Write { .. }, Output::Write)
                | (Input::Cas { .. }, Output::Cas { .. })
                | (Input::Append { .. }, Output::Append)
                | (Input::ReadList, Output::ReadList { .. })
        )
    }
}

/// A recorded history: every operation of a test, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations.
    pub operations: Vec<Operation>,
}

/// Why an operation is not a valid part of a history.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    /// Completed before it was invoked.
    #[error("completes at {complete_ns} ns, before its invocation at {invoke_ns} ns")]
    CompletedBeforeInvoked {
        /// Invocation time.
        invoke_ns: u64,
        /// Completion time.
        complete_ns: u64,
    },
    /// An `ok` outcome without a completion time.
    #[error("outcome is ok but complete_ns is missing")]
    OkWithoutCompletion,
    /// The output is not of the input's kind (a read answered as a write).
    #[error("output {output:?} does not answer input {input:?}")]
    OutputMismatch {
        /// The input.
        input: Input,
        /// The output.
        output: Output,
    },
    /// Register and list operations on the same key.
    #[error(
        "key {key:?} has {kind:?} operations but operation {first} used it as a {first_kind:?}"
    )]
    MixedKey {
        /// The key.
        key: String,
        /// This operation's kind of key.
        kind: KeyKind,
        /// The first operation on the key, counted from 1 (its line in a file).
        first: usize,
        /// That operation's kind of key.
        first_kind: KeyKind,
    },
}

/// Why a history could not be read or is not valid.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// Reading the input failed.
    #[error("line {line}: cannot read: {source}")]
    Io {
        /// The line, counted from 1.
        line: usize,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not an operation in the expected JSON form.
    #[error("line {line}: not a valid operation: {source}")]
    Json {
        /// The line, counted from 1.
        line: usize,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// An operation is not valid.
    #[error("line {line}: {problem}")]
    Invalid {
        /// The line of the operation, counted from 1 (for a history built in
        /// memory: the operation's position, counted from 1).
        line: usize,
        /// What is wrong.
        problem: Invalid,
    },
    /// Writing the output failed.
    #[error("cannot write the history: {0}")]
    Write(std::io::Error),
}

impl Operation {
    /// Checks the operation on its own (times, outcome against input).
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Outcome::Ok(output) = &self.outcome {
            if self.complete_ns.is_none() {
                return Err(Invalid::OkWithoutCompletion);
            }
            if !self.input.matches(output) {
                return Err(Invalid::OutputMismatch {
                    input: self.input.clone(),
                    output: output.clone(),
                });
            }
        }
        if let Some(complete_ns) = self.complete_ns {
            if complete_ns < self.invoke_ns {
                return Err(Invalid::CompletedBeforeInvoked {
                    invoke_ns: self.invoke_ns,
                    complete_ns,
                });
            }
        }
        Ok(())
    }
}

/// Tracks the kind of each key, to refuse a key used both ways.
#[derive(Default)]
struct KeyKinds<'a> {
    first: HashMap<&'a str, (usize, KeyKind)>,
}

impl<'a> KeyKinds<'a> {
    fn note(&mut self, op: &'a Operation, line: usize) -> Result<(), Invalid> {
        let kind = op.input.key_kind();
        let (first, first_kind) = *self.first.entry(&op.key).or_insert((line, kind));
        if first_kind != kind {
            return Err(Invalid::MixedKey {
                key: op.key.clone(),
                kind,
                first,
                first_kind,
            });
        }
        Ok(())
    }
}

impl History {
    /// A history of these operations.
    pub fn new(operations: Vec<Operation>) -> Self {
        Self { operations }
    }

    /// Checks every operation, and that no key mixes register and list
    /// operations. Errors name the operation's position, counted from 1.
    pub fn validate(&self) -> Result<(), HistoryError> {
        self.validate_with_lines(&(1..=self.operations.len()).collect::<Vec<_>>())
    }

    fn validate_with_lines(&self, lines: &[usize]) -> Result<(), HistoryError> {
        let mut kinds = KeyKinds::default();
        for (op, &line) in self.operations.iter().zip(lines) {
            op.validate()
                .and_then(|()| kinds.note(op, line))
                .map_err(|problem| HistoryError::Invalid { line, problem })?;
        }
        Ok(())
    }

    /// Reads and validates a JSON Lines history: one [`Operation`] per
    /// line, blank lines skipped. Errors name the line.
    pub fn read_jsonl(reader: impl BufRead) -> Result<History, HistoryError> {
        let mut operations = Vec::new();
        let mut lines = Vec::new();
        for (index, text) in reader.lines().enumerate() {
            let line = index + 1;
            let text = text.map_err(|source| HistoryError::Io { line, source })?;
            if text.trim().is_empty() {
                continue;
            }
            let op: Operation = serde_json::from_str(&text)
                .map_err(|source| HistoryError::Json { line, source })?;
            operations.push(op);
            lines.push(line);
        }
        let history = History { operations };
        history.validate_with_lines(&lines)?;
        Ok(history)
    }

    /// Writes the history as JSON Lines, one operation per line.
    pub fn write_jsonl(&self, mut writer: impl Write) -> Result<(), HistoryError> {
        for op in &self.operations {
            // An operation is plain strings and numbers: it always encodes.
            serde_json::to_writer(&mut writer, op).map_err(|e| HistoryError::Write(e.into()))?;
            writer.write_all(b"\n").map_err(HistoryError::Write)?;
        }
        writer.flush().map_err(HistoryError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_op() -> Operation {
        Operation {
            process: 1,
            key: "x".into(),
            input: Input::Write { value: "5".into() },
            invoke_ns: 100,
            complete_ns: Some(250),
            outcome: Outcome::Ok(Output::Write),
        }
    }

    #[test]
    fn the_documented_line_is_the_encoding() {
        let mut out = Vec::new();
        History::new(vec![write_op()])
            .write_jsonl(&mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"process":1,"key":"x","input":{"type":"write","value":"5"},"invoke_ns":100,"complete_ns":250,"outcome":{"status":"ok","output":{"type":"write"}}}"#
                .to_string()
                + "\n"
        );
    }

    #[test]
    fn every_kind_round_trips() {
        let mut ops = Vec::new();
        let cases = [
            (Input::Read, Output::Read { value: None }),
            (
                Input::Read,
                Output::Read {
                    value: Some("a".into()),
                },
            ),
            (Input::Write { value: "w".into() }, Output::Write),
            (
                Input::Cas {
                    expected: None,
                    new: "n".into(),
                },
                Output::Cas { succeeded: true },
            ),
            (Input::Append { value: "e".into() }, Output::Append),
            (
                Input::ReadList,
                Output::ReadList {
                    values: vec!["e".into()],
                },
            ),
        ];
        for (i, (input, output)) in cases.into_iter().enumerate() {
            let key = if input.key_kind() == KeyKind::List {
                "l"
            } else {
                "r"
            };
            ops.push(Operation {
                process: i as u64,
                key: key.into(),
                input,
                invoke_ns: 1,
                complete_ns: Some(2),
                outcome: Outcome::Ok(output),
            });
        }
        ops.push(Operation {
            complete_ns: None,
            outcome: Outcome::Unknown,
            ..write_op()
        });
        ops.push(Operation {
            outcome: Outcome::Fail,
            key: "r".into(),
            ..write_op()
        });
        let history = History::new(ops);
        let mut out = Vec::new();
        history.write_jsonl(&mut out).unwrap();
        let back = History::read_jsonl(&out[..]).unwrap();
        assert_eq!(back, history);
    }

    #[test]
    fn errors_name_the_line() {
        let good = r#"{"process":1,"key":"x","input":{"type":"write","value":"5"},"invoke_ns":100,"complete_ns":250,"outcome":{"status":"ok","output":{"type":"write"}}}"#;
        let text = format!("{good}\n\n{{\"process\":1}}\n");
        let err = History::read_jsonl(text.as_bytes()).unwrap_err();
        assert!(matches!(err, HistoryError::Json { line: 3, .. }), "{err}");
        assert!(err.to_string().starts_with("line 3: "), "{err}");

        let backwards = good.replace("\"complete_ns\":250", "\"complete_ns\":50");
        let err = History::read_jsonl(format!("{good}\n{backwards}\n").as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                HistoryError::Invalid {
                    line: 2,
                    problem: Invalid::CompletedBeforeInvoked { .. }
                }
            ),
            "{err}"
        );

        let mismatch = good.replace(r#"{"type":"write"}}"#, r#"{"type":"append"}}"#);
        let err = History::read_jsonl(mismatch.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                HistoryError::Invalid {
                    line: 1,
                    problem: Invalid::OutputMismatch { .. }
                }
            ),
            "{err}"
        );

        let no_completion = good.replace("\"complete_ns\":250", "\"complete_ns\":null");
        let err = History::read_jsonl(no_completion.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                HistoryError::Invalid {
                    problem: Invalid::OkWithoutCompletion,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_key_is_a_register_or_a_list_never_both() {
        let append = Operation {
            input: Input::Append { value: "a".into() },
            outcome: Outcome::Ok(Output::Append),
            ..write_op()
        };
        let err = History::new(vec![write_op(), append])
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                HistoryError::Invalid {
                    line: 2,
                    problem: Invalid::MixedKey { first: 1, .. }
                }
            ),
            "{err}"
        );
    }
}
