//! The linearizability checker on hand-made histories whose answer is known.

use std::time::Duration;

use raftkv_check::history::{History, Input, Operation, Outcome, Output};
use raftkv_check::{check, CheckOptions, CheckReport, Verdict};

fn options() -> CheckOptions {
    CheckOptions {
        time_budget: Duration::from_secs(30),
        threads: 2,
    }
}

/// A completed operation on key "x".
fn ok(process: u64, input: Input, invoke_ns: u64, complete_ns: u64, output: Output) -> Operation {
    Operation {
        process,
        key: "x".into(),
        input,
        invoke_ns,
        complete_ns: Some(complete_ns),
        outcome: Outcome::Ok(output),
    }
}

fn unknown(process: u64, input: Input, invoke_ns: u64) -> Operation {
    Operation {
        process,
        key: "x".into(),
        input,
        invoke_ns,
        complete_ns: None,
        outcome: Outcome::Unknown,
    }
}

fn failed(process: u64, input: Input, invoke_ns: u64, complete_ns: u64) -> Operation {
    Operation {
        process,
        key: "x".into(),
        input,
        invoke_ns,
        complete_ns: Some(complete_ns),
        outcome: Outcome::Fail,
    }
}

fn write(value: &str) -> Input {
    Input::Write {
        value: value.into(),
    }
}

fn read(value: Option<&str>) -> Output {
    Output::Read {
        value: value.map(str::to_string),
    }
}

fn cas(expected: Option<&str>, new: &str) -> Input {
    Input::Cas {
        expected: expected.map(str::to_string),
        new: new.into(),
    }
}

fn append(value: &str) -> Input {
    Input::Append {
        value: value.into(),
    }
}

fn read_list(values: &[&str]) -> Output {
    Output::ReadList {
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn verdict(ops: Vec<Operation>) -> (Verdict, CheckReport) {
    let history = History::new(ops);
    history.validate().expect("a valid history");
    let report = check(&history, options());
    (report.verdict, report)
}

fn assert_linearizable(ops: Vec<Operation>) {
    let (verdict, report) = verdict(ops);
    assert_eq!(verdict, Verdict::Linearizable, "{report}");
}

fn assert_violation(ops: Vec<Operation>) -> String {
    let (verdict, report) = verdict(ops);
    assert_eq!(verdict, Verdict::NotLinearizable, "{report}");
    report.to_string()
}

#[test]
fn sequential_operations_are_linearizable() {
    assert_linearizable(vec![
        ok(1, Input::Read, 0, 10, read(None)),
        ok(1, write("1"), 20, 30, Output::Write),
        ok(2, Input::Read, 40, 50, read(Some("1"))),
        ok(2, write("2"), 60, 70, Output::Write),
        ok(1, Input::Read, 80, 90, read(Some("2"))),
    ]);
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in [None, Some("1")] {
        assert_linearizable(vec![
            ok(1, write("1"), 0, 100, Output::Write),
            ok(2, Input::Read, 10, 20, read(seen)),
        ]);
    }
}

#[test]
fn a_stale_read_after_a_completed_write_is_a_violation() {
    let text = assert_violation(vec![
        ok(1, write("3"), 0, 10, Output::Write),
        ok(1, write("5"), 20, 30, Output::Write),
        ok(2, Input::Read, 40, 50, read(Some("3"))),
    ]);
    assert!(
        text.contains("read returned \"3\" but the value was \"5\""),
        "{text}"
    );
    assert!(text.contains("#2 process 1"), "{text}");
}

#[test]
fn a_read_of_a_value_never_written_is_a_violation() {
    assert_violation(vec![
        ok(1, write("1"), 0, 10, Output::Write),
        ok(2, Input::Read, 5, 50, read(Some("7"))),
    ]);
}

#[test]
fn a_read_seeing_absent_after_a_completed_write_is_a_violation() {
    assert_violation(vec![
        ok(1, write("1"), 0, 10, Output::Write),
        ok(2, Input::Read, 20, 30, read(None)),
    ]);
}

#[test]
fn an_unknown_write_may_take_effect_later() {
    assert_linearizable(vec![
        unknown(1, write("1"), 0),
        ok(2, Input::Read, 10, 20, read(None)),
        ok(2, Input::Read, 1_000, 1_010, read(Some("1"))),
    ]);
}

#[test]
fn an_unknown_write_may_never_take_effect() {
    assert_linearizable(vec![
        unknown(1, write("1"), 0),
        ok(2, Input::Read, 1_000, 1_010, read(None)),
    ]);
    // With a CAS on the key, the unknown write is searched, not dropped.
    assert_linearizable(vec![
        unknown(1, write("1"), 0),
        ok(2, cas(None, "2"), 100, 110, Output::Cas { succeeded: true }),
        ok(2, Input::Read, 1_000, 1_010, read(Some("2"))),
    ]);
}

#[test]
fn an_unknown_write_takes_effect_at_most_once() {
    assert_violation(vec![
        unknown(1, write("1"), 0),
        ok(2, Input::Read, 10, 20, read(Some("1"))),
        ok(2, write("2"), 30, 40, Output::Write),
        ok(2, Input::Read, 50, 60, read(Some("1"))),
    ]);
}

#[test]
fn an_unknown_read_constrains_nothing() {
    assert_linearizable(vec![
        ok(1, write("1"), 0, 10, Output::Write),
        unknown(2, Input::Read, 20),
    ]);
}

#[test]
fn a_failed_write_whose_value_is_read_is_a_violation() {
    assert_violation(vec![
        failed(1, write("1"), 0, 10),
        ok(2, Input::Read, 20, 30, read(Some("1"))),
    ]);
}

#[test]
fn a_failed_write_that_is_not_seen_is_fine() {
    assert_linearizable(vec![
        failed(1, write("1"), 0, 10),
        ok(2, Input::Read, 20, 30, read(None)),
    ]);
}

#[test]
fn cas_succeeds_exactly_when_the_value_matches() {
    assert_linearizable(vec![
        ok(1, cas(None, "a"), 0, 10, Output::Cas { succeeded: true }),
        ok(
            1,
            cas(Some("x"), "b"),
            20,
            30,
            Output::Cas { succeeded: false },
        ),
        ok(
            1,
            cas(Some("a"), "b"),
            40,
            50,
            Output::Cas { succeeded: true },
        ),
        ok(2, Input::Read, 60, 70, read(Some("b"))),
    ]);
    // Claims success though the value was "a", not absent.
    let text = assert_violation(vec![
        ok(1, write("a"), 0, 10, Output::Write),
        ok(2, cas(None, "b"), 20, 30, Output::Cas { succeeded: true }),
    ]);
    assert!(
        text.contains("cas succeeded but the value was \"a\""),
        "{text}"
    );
    // Claims failure though the value was the expected one.
    let text = assert_violation(vec![
        ok(1, write("a"), 0, 10, Output::Write),
        ok(
            2,
            cas(Some("a"), "b"),
            20,
            30,
            Output::Cas { succeeded: false },
        ),
    ]);
    assert!(text.contains("cas failed"), "{text}");
    // A failed CAS does not write.
    assert_violation(vec![
        ok(
            1,
            cas(Some("z"), "b"),
            0,
            10,
            Output::Cas { succeeded: false },
        ),
        ok(2, Input::Read, 20, 30, read(Some("b"))),
    ]);
}

#[test]
fn two_concurrent_cas_from_absent_cannot_both_succeed() {
    assert_violation(vec![
        ok(1, cas(None, "a"), 0, 100, Output::Cas { succeeded: true }),
        ok(2, cas(None, "b"), 0, 100, Output::Cas { succeeded: true }),
    ]);
    assert_linearizable(vec![
        ok(1, cas(None, "a"), 0, 100, Output::Cas { succeeded: true }),
        ok(2, cas(None, "b"), 0, 100, Output::Cas { succeeded: false }),
        ok(3, Input::Read, 200, 300, read(Some("a"))),
    ]);
}

#[test]
fn an_unknown_cas_may_or_may_not_have_applied() {
    for seen in [Some("a"), Some("b")] {
        assert_linearizable(vec![
            ok(1, write("a"), 0, 10, Output::Write),
            unknown(2, cas(Some("a"), "b"), 20),
            ok(3, Input::Read, 100, 110, read(seen)),
        ]);
    }
}

#[test]
fn list_reads_see_every_acknowledged_append_in_order() {
    assert_linearizable(vec![
        ok(1, append("a"), 0, 10, Output::Append),
        ok(2, append("b"), 5, 30, Output::Append),
        ok(3, Input::ReadList, 12, 20, read_list(&["a"])),
        ok(3, Input::ReadList, 40, 50, read_list(&["a", "b"])),
        unknown(1, append("c"), 60),
        ok(3, Input::ReadList, 70, 80, read_list(&["a", "b", "c"])),
    ]);
    // Concurrent appends may land in either order.
    assert_linearizable(vec![
        ok(1, append("a"), 0, 10, Output::Append),
        ok(2, append("b"), 0, 10, Output::Append),
        ok(3, Input::ReadList, 20, 30, read_list(&["b", "a"])),
    ]);
}

#[test]
fn a_list_read_missing_an_acknowledged_append_is_a_violation() {
    let text = assert_violation(vec![
        ok(1, append("a"), 0, 10, Output::Append),
        ok(1, append("b"), 20, 30, Output::Append),
        ok(2, Input::ReadList, 40, 50, read_list(&["a"])),
    ]);
    assert!(
        text.contains("read [\"a\"] but the list was [\"a\", (an append no read saw)]"),
        "{text}"
    );
}

#[test]
fn a_list_read_in_an_impossible_order_is_a_violation() {
    assert_violation(vec![
        ok(1, append("a"), 0, 10, Output::Append),
        ok(1, append("b"), 20, 30, Output::Append),
        ok(2, Input::ReadList, 40, 50, read_list(&["b", "a"])),
    ]);
    // Two readers disagreeing on the order of concurrent appends.
    assert_violation(vec![
        ok(1, append("a"), 0, 10, Output::Append),
        ok(2, append("b"), 0, 10, Output::Append),
        ok(3, Input::ReadList, 20, 30, read_list(&["a", "b"])),
        ok(4, Input::ReadList, 20, 30, read_list(&["b", "a"])),
    ]);
}

#[test]
fn one_bad_key_makes_the_history_not_linearizable() {
    let mut ops = Vec::new();
    for key in ["a", "b", "c"] {
        ops.push(Operation {
            key: key.into(),
            ..ok(1, write("1"), 0, 10, Output::Write)
        });
        ops.push(Operation {
            key: key.into(),
            ..ok(2, Input::Read, 20, 30, read(Some("1")))
        });
    }
    ops[3].outcome = Outcome::Ok(read(Some("2")));
    let (verdict, report) = verdict(ops);
    assert_eq!(verdict, Verdict::NotLinearizable);
    let keys: Vec<(&str, Verdict)> = report
        .partitions
        .iter()
        .map(|p| (p.key.as_str(), p.verdict))
        .collect();
    assert_eq!(
        keys,
        [
            ("a", Verdict::Linearizable),
            ("b", Verdict::NotLinearizable),
            ("c", Verdict::Linearizable)
        ]
    );
    assert!(report.to_string().contains("key \"b\": NOT linearizable"));
}

#[test]
fn an_invalid_key_is_unknown_never_a_pass() {
    let history = History::new(vec![
        ok(1, write("1"), 0, 10, Output::Write),
        ok(2, append("a"), 0, 10, Output::Append),
    ]);
    let report = check(&history, options());
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    let reason = report.partitions[0].error.as_deref();
    assert!(reason.is_some_and(|r| r.starts_with("invalid operations: ")));
}

/// Many concurrent unknown writes, each seen once, then a read of a value
/// nobody wrote: proving it a violation means trying every subset of the
/// unknown writes.
fn expensive_history(writes: u64) -> History {
    let mut ops = Vec::new();
    for i in 0..writes {
        ops.push(unknown(i, write(&i.to_string()), i));
        ops.push(ok(
            1_000 + i,
            Input::Read,
            i,
            1_000_000,
            read(Some(&i.to_string())),
        ));
    }
    ops.push(ok(
        9_999,
        Input::Read,
        2_000_000,
        2_000_010,
        read(Some("never")),
    ));
    History::new(ops)
}

#[test]
fn running_out_of_budget_is_unknown() {
    let history = expensive_history(24);
    let report = check(
        &history,
        CheckOptions {
            time_budget: Duration::from_millis(20),
            threads: 1,
        },
    );
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert!(
        report.to_string().contains("time budget ran out"),
        "{report}"
    );
    assert!(report.elapsed < Duration::from_secs(5));
}

#[test]
fn an_unseen_unknown_write_can_explain_a_failed_cas() {
    assert_linearizable(vec![
        ok(1, write("a"), 0, 10, Output::Write),
        unknown(2, write("b"), 20),
        ok(
            3,
            cas(Some("a"), "c"),
            100,
            110,
            Output::Cas { succeeded: false },
        ),
    ]);
    // Without the unknown write, nothing explains the failure.
    assert_violation(vec![
        ok(1, write("a"), 0, 10, Output::Write),
        ok(
            3,
            cas(Some("a"), "c"),
            100,
            110,
            Output::Cas { succeeded: false },
        ),
    ]);
}

#[test]
fn an_unknown_cas_a_read_saw_applied_once_before_that_read() {
    assert_linearizable(vec![
        ok(1, write("a"), 0, 10, Output::Write),
        unknown(2, cas(Some("a"), "b"), 20),
        ok(3, Input::Read, 100, 110, read(Some("b"))),
    ]);
    assert_violation(vec![
        ok(1, write("a"), 0, 10, Output::Write),
        unknown(2, cas(Some("a"), "b"), 20),
        ok(3, Input::Read, 100, 110, read(Some("b"))),
        ok(3, Input::Read, 120, 130, read(Some("a"))),
    ]);
    // Seen before it was invoked: impossible.
    assert_violation(vec![
        ok(1, write("a"), 0, 10, Output::Write),
        ok(3, Input::Read, 20, 30, read(Some("b"))),
        unknown(2, cas(Some("a"), "b"), 40),
    ]);
}
