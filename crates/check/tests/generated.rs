//! The checker on large generated histories whose truth is known: a real
//! register or list is simulated, each operation taking effect at a random
//! instant between its invocation and completion, some outcomes lost
//! (unknown, applied or not) or refused (failed, not applied).

use std::time::{Duration, Instant};

use raftkv_check::history::{History, Input, Operation, Outcome, Output};
use raftkv_check::{check, CheckOptions, Verdict};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Register,
    List,
}

/// One planned operation: when it is invoked, takes effect, completes.
struct Planned {
    process: u64,
    invoke_ns: u64,
    effect_ns: u64,
    complete_ns: u64,
    input: Input,
    /// 0 ok, 1 unknown, 2 failed.
    fate: u8,
    applied: bool,
}

/// Percent of operations whose outcome is lost (unknown); 2 more fail.
const UNKNOWN_PERCENT: u64 = 5;

/// A linearizable history of `ops_per_key` operations on each of `keys`
/// keys, `processes` clients per key. `value_domain` bounds the written
/// values (small domains make reads ambiguous, hence harder to check).
fn generate(
    rng: &mut Rng,
    keys: usize,
    ops_per_key: usize,
    processes: u64,
    value_domain: u64,
    kind: Kind,
) -> History {
    let mut operations = Vec::new();
    for k in 0..keys {
        let key = format!("key-{k}");
        let mut plans = Vec::new();
        let mut next_free = vec![0u64; processes as usize];
        let mut process_ids: Vec<u64> = (0..processes).map(|p| k as u64 * 1000 + p).collect();
        let mut counter = 0u64;
        for _ in 0..ops_per_key {
            let p = rng.below(processes) as usize;
            let invoke_ns = next_free[p] + rng.below(50);
            let effect_ns = invoke_ns + 1 + rng.below(100);
            let complete_ns = effect_ns + 1 + rng.below(100);
            next_free[p] = complete_ns;
            counter += 1;
            let value = (counter % value_domain).to_string();
            let input = match (kind, rng.below(10)) {
                (Kind::Register, 0..=3) => Input::Read,
                (Kind::Register, 4..=6) => Input::Write { value },
                (Kind::Register, _) => Input::Cas {
                    expected: if rng.chance(20) {
                        None
                    } else {
                        Some(rng.below(value_domain.min(counter)).to_string())
                    },
                    new: value,
                },
                (Kind::List, 0..=4) => Input::ReadList,
                (Kind::List, _) => Input::Append {
                    value: format!("{k}-{counter}"),
                },
            };
            let roll = rng.below(100);
            let fate = if roll < UNKNOWN_PERCENT {
                1
            } else if roll < UNKNOWN_PERCENT + 2 {
                2
            } else {
                0
            };
            plans.push(Planned {
                process: process_ids[p],
                invoke_ns,
                effect_ns,
                complete_ns,
                input,
                fate,
                applied: fate == 0 || (fate == 1 && rng.chance(50)),
            });
            if fate == 1 {
                // As Jepsen does: a client whose operation is in doubt is
                // replaced by a new one.
                process_ids[p] += processes;
            }
        }
        plans.sort_by_key(|plan| plan.effect_ns);
        let mut register: Option<String> = None;
        let mut list: Vec<String> = Vec::new();
        for plan in plans {
            let output = if plan.applied {
                Some(match &plan.input {
                    Input::Read => Output::Read {
                        value: register.clone(),
                    },
                    Input::Write { value } => {
                        register = Some(value.clone());
                        Output::Write
                    }
                    Input::Cas { expected, new } => {
                        let succeeded = register == *expected;
                        if succeeded {
                            register = Some(new.clone());
                        }
                        Output::Cas { succeeded }
                    }
                    Input::Append { value } => {
                        list.push(value.clone());
                        Output::Append
                    }
                    Input::ReadList => Output::ReadList {
                        values: list.clone(),
                    },
                })
            } else {
                None
            };
            let (outcome, complete_ns) = match (plan.fate, output) {
                (0, Some(output)) => (Outcome::Ok(output), Some(plan.complete_ns)),
                (2, _) => (Outcome::Fail, Some(plan.complete_ns)),
                _ => (Outcome::Unknown, None),
            };
            operations.push(Operation {
                process: plan.process,
                key: key.clone(),
                input: plan.input,
                invoke_ns: plan.invoke_ns,
                complete_ns,
                outcome,
            });
        }
    }
    // Interleave the keys as a real recording would.
    operations.sort_by_key(|op| op.invoke_ns);
    History::new(operations)
}

fn options() -> CheckOptions {
    CheckOptions {
        time_budget: Duration::from_secs(60),
        threads: 0,
    }
}

#[test]
fn fifty_keys_of_two_hundred_operations_check_quickly() {
    for kind in [Kind::Register, Kind::List] {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let history = generate(&mut rng, 50, 200, 5, u64::MAX, kind);
        history.validate().expect("valid");
        let started = Instant::now();
        let report = check(&history, options());
        let elapsed = started.elapsed();
        eprintln!(
            "50 keys x 200 operations, {}: {elapsed:?}, {} states",
            if kind == Kind::List {
                "lists"
            } else {
                "registers"
            },
            report
                .partitions
                .iter()
                .map(|p| p.states_explored)
                .sum::<u64>()
        );
        assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
        assert_eq!(report.partitions.len(), 50);
        // The target is well under a second in release; the bound leaves
        // room for a loaded machine and unoptimized builds.
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    }
}

#[test]
fn generated_histories_with_few_values_and_lists_are_linearizable() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let registers = generate(&mut rng, 4, 150, 5, 3, Kind::Register);
        let report = check(&registers, options());
        assert_eq!(
            report.verdict,
            Verdict::Linearizable,
            "seed {seed}: {report}"
        );
        let lists = generate(&mut rng, 4, 150, 5, u64::MAX, Kind::List);
        let report = check(&lists, options());
        assert_eq!(
            report.verdict,
            Verdict::Linearizable,
            "seed {seed}: {report}"
        );
    }
}

/// Replaces the value of one completed read on `key-7` with one nobody
/// wrote.
fn corrupt_one_read(history: &mut History) -> usize {
    let (index, op) = history
        .operations
        .iter_mut()
        .enumerate()
        .filter(|(_, op)| op.key == "key-7")
        .find(|(_, op)| {
            matches!(
                op.outcome,
                Outcome::Ok(Output::Read { .. }) | Outcome::Ok(Output::ReadList { .. })
            )
        })
        .expect("a completed read on key-7");
    op.outcome = match &op.outcome {
        Outcome::Ok(Output::ReadList { values }) => {
            let mut values = values.clone();
            values.push("corrupt".into());
            Outcome::Ok(Output::ReadList { values })
        }
        _ => Outcome::Ok(Output::Read {
            value: Some("corrupt".into()),
        }),
    };
    index
}

#[test]
fn a_corrupted_read_is_found_and_pointed_at() {
    for kind in [Kind::Register, Kind::List] {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut history = generate(&mut rng, 50, 200, 5, u64::MAX, kind);
        let index = corrupt_one_read(&mut history);
        let started = Instant::now();
        let report = check(&history, options());
        eprintln!("corrupted: {:?}", started.elapsed());
        assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
        let bad: Vec<&str> = report
            .partitions
            .iter()
            .filter(|p| p.verdict != Verdict::Linearizable)
            .map(|p| p.key.as_str())
            .collect();
        assert_eq!(bad, ["key-7"]);
        let violation = report
            .partitions
            .iter()
            .find(|p| p.key == "key-7")
            .and_then(|p| p.violation.as_ref())
            .expect("explained");
        assert!(
            violation.stuck.iter().any(|s| s.op.number == index + 1),
            "{report}"
        );
    }
}

#[test]
fn a_history_survives_its_file_format() {
    let mut rng = Rng(7);
    let history = generate(&mut rng, 3, 50, 5, 4, Kind::Register);
    let mut bytes = Vec::new();
    history.write_jsonl(&mut bytes).expect("write");
    assert_eq!(History::read_jsonl(&bytes[..]).expect("read"), history);
}
