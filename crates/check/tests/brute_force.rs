//! The checker against the definition: on thousands of tiny random
//! histories, its verdict must equal that of trying every order of every
//! subset of the operations with unknown outcome. This is what keeps the
//! shortcuts (pruning unseen writes, inferring completions, list positions)
//! honest.

use std::time::Duration;

use raftkv_check::history::{History, Input, Operation, Outcome, Output};
use raftkv_check::{check, CheckOptions, Verdict};

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
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const VALUES: [&str; 3] = ["1", "2", "3"];

fn random_register_op(rng: &mut Rng) -> (Input, Output) {
    let maybe = |rng: &mut Rng| (rng.below(4) > 0).then(|| rng.pick(&VALUES).to_string());
    match rng.below(3) {
        0 => (Input::Read, Output::Read { value: maybe(rng) }),
        1 => (
            Input::Write {
                value: rng.pick(&VALUES).into(),
            },
            Output::Write,
        ),
        _ => (
            Input::Cas {
                expected: maybe(rng),
                new: rng.pick(&VALUES).into(),
            },
            Output::Cas {
                succeeded: rng.below(2) == 0,
            },
        ),
    }
}

fn random_list_op(rng: &mut Rng) -> (Input, Output) {
    if rng.below(2) == 0 {
        let value = rng.pick(&["a", "b", "c", "d"]).to_string();
        (Input::Append { value }, Output::Append)
    } else {
        // A prefix of a random arrangement: often, but not always, possible.
        let mut all = ["a", "b", "c", "d"];
        for i in (1..all.len()).rev() {
            all.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let len = rng.below(4) as usize;
        let values = all[..len].iter().map(|v| v.to_string()).collect();
        (Input::ReadList, Output::ReadList { values })
    }
}

fn random_history(rng: &mut Rng, list: bool) -> History {
    let count = 2 + rng.below(6);
    let operations = (0..count)
        .map(|process| {
            let (input, output) = if list {
                random_list_op(rng)
            } else {
                random_register_op(rng)
            };
            let invoke_ns = rng.below(20);
            let complete_ns = invoke_ns + rng.below(10);
            let (outcome, complete_ns) = match rng.below(10) {
                0 | 1 => (Outcome::Unknown, None),
                2 => (Outcome::Fail, Some(complete_ns)),
                _ => (Outcome::Ok(output), Some(complete_ns)),
            };
            Operation {
                process,
                key: "k".into(),
                input,
                invoke_ns,
                complete_ns,
                outcome,
            }
        })
        .collect();
    History::new(operations)
}

#[derive(Clone, PartialEq)]
enum State {
    Register(Option<String>),
    List(Vec<String>),
}

/// Applies `op` (its output checked when known); `None` if impossible.
fn apply(state: &State, op: &Operation) -> Option<State> {
    let output = match &op.outcome {
        Outcome::Ok(output) => Some(output),
        _ => None,
    };
    match (state, &op.input) {
        (State::Register(value), Input::Read) => match output {
            Some(Output::Read { value: read }) if read != value => None,
            _ => Some(state.clone()),
        },
        (State::Register(_), Input::Write { value }) => Some(State::Register(Some(value.clone()))),
        (State::Register(value), Input::Cas { expected, new }) => {
            let holds = value == expected;
            match output {
                Some(Output::Cas { succeeded }) if *succeeded != holds => None,
                _ if holds => Some(State::Register(Some(new.clone()))),
                _ => Some(state.clone()),
            }
        }
        (State::List(values), Input::Append { value }) => {
            let mut values = values.clone();
            values.push(value.clone());
            Some(State::List(values))
        }
        (State::List(values), Input::ReadList) => match output {
            Some(Output::ReadList { values: read }) if read != values => None,
            _ => Some(state.clone()),
        },
        _ => None,
    }
}

/// Whether some order of the chosen operations works, extending `order`.
fn search(ops: &[&Operation], placed: &mut Vec<bool>, state: &State) -> bool {
    let required_left = ops
        .iter()
        .zip(placed.iter())
        .any(|(op, &p)| !p && op.outcome != Outcome::Unknown);
    if !required_left {
        return true;
    }
    for i in 0..ops.len() {
        if placed[i] {
            continue;
        }
        // Real time: every unplaced op that completed before i was invoked
        // must go first.
        let blocked = (0..ops.len()).any(|j| {
            j != i
                && !placed[j]
                && ops[j].outcome != Outcome::Unknown
                && ops[j].complete_ns.is_some_and(|c| c < ops[i].invoke_ns)
        });
        if blocked {
            continue;
        }
        if let Some(next) = apply(state, ops[i]) {
            placed[i] = true;
            if search(ops, placed, &next) {
                return true;
            }
            placed[i] = false;
        }
    }
    false
}

/// An unknown op left unplaced simply never took effect, so one search
/// over orders of any subset decides.
fn brute_force(history: &History, list: bool) -> bool {
    let ops: Vec<&Operation> = history
        .operations
        .iter()
        .filter(|op| op.outcome != Outcome::Fail)
        .collect();
    let init = if list {
        State::List(Vec::new())
    } else {
        State::Register(None)
    };
    search(&ops, &mut vec![false; ops.len()], &init)
}

fn compare(list: bool, seed: u64, histories: usize) {
    let mut rng = Rng(seed);
    let mut verdicts = [0usize; 2];
    for n in 0..histories {
        let history = random_history(&mut rng, list);
        let expected = brute_force(&history, list);
        let report = check(
            &history,
            CheckOptions {
                time_budget: Duration::from_secs(10),
                threads: 1,
            },
        );
        let got = match report.verdict {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable => false,
            Verdict::Unknown => panic!("history {n} undecided: {report}"),
        };
        assert_eq!(
            got, expected,
            "history {n} (brute force says linearizable: {expected}):\n{history:#?}\n{report}"
        );
        verdicts[usize::from(got)] += 1;
    }
    // Both answers must be well represented, or the comparison proves little.
    assert!(verdicts.iter().all(|&v| v > histories / 10), "{verdicts:?}");
}

#[test]
fn register_verdicts_match_brute_force() {
    compare(false, 0x0123_4567_89ab_cdef, 5000);
}

#[test]
fn list_verdicts_match_brute_force() {
    compare(true, 0xfedc_ba98_7654_3210, 5000);
}
