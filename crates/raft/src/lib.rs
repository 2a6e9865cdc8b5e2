//! The Raft consensus algorithm as a deterministic state machine.
#![deny(missing_docs, unsafe_code)]

mod types;

pub use types::*;
