//! Checking what clients of a raftkv cluster saw.
//!
//! A chaos test records every client operation (what was asked, when, and
//! what came back) while it injects faults; this crate decides afterwards
//! whether some single order of those operations, consistent with their
//! real-time order, explains every answer (linearizability), and whether
//! recorded watch streams kept etcd's watch guarantees.
//!
//! - [`history`]: the recorded operations and their JSON Lines file format.
//! - [`linearize`]: [`check`], the linearizability check of a history, key
//!   by key, in parallel, under a time budget; [`report`] is its result.
//! - [`watch`]: [`check_watches`], etcd's watch guarantees on recorded
//!   watch streams.
//! - `model` (the register and list specifications) and `search` (Wing and
//!   Gong's search with Lowe's memoization) are its internals.
//!
//! ```
//! use raftkv_check::history::{History, Input, Operation, Outcome, Output};
//! use raftkv_check::{check, CheckOptions, Verdict};
//!
//! let op = |process, input, invoke_ns, complete_ns, output| Operation {
//!     process,
//!     key: "x".to_string(),
//!     input,
//!     invoke_ns,
//!     complete_ns: Some(complete_ns),
//!     outcome: Outcome::Ok(output),
//! };
//! let history = History::new(vec![
//!     op(1, Input::Write { value: "5".into() }, 0, 10, Output::Write),
//!     // Starts after the write completed, yet sees the key absent.
//!     op(2, Input::Read, 20, 30, Output::Read { value: None }),
//! ]);
//! let report = check(&history, CheckOptions::default());
//! assert_eq!(report.verdict, Verdict::NotLinearizable);
//! println!("{report}");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod history;
pub mod linearize;
mod model;
pub mod report;
mod search;
pub mod watch;

pub use linearize::{check, CheckOptions};
pub use report::{CheckReport, Verdict};
pub use watch::{check_watches, WatchReport};
