//! `bench report DIR`: the comparison table of many runs, as markdown.
//!
//! The comparison script saves each run's `--json` object in a file of DIR
//! and, for each server, one resource record
//! `{"kind": "resources", "label", "peak_rss_kib", "data_dir_bytes", "keys", "val_size"}`.
//! Runs are grouped by workload (and read consistency) and client count;
//! each group shows the median over rounds of each label's throughput, p50
//! and p99, and the candidate/baseline ratio. Medians, because a drifting
//! machine spoils single rounds, not the middle one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::ReportArgs;
use crate::error::{CtlError, ExitCode};

/// One run, as read back from its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Workload, with ` (serializable)` for serializable reads.
    pub workload: String,
    /// Label (`etcd`, `raftkv`).
    pub label: String,
    /// Concurrent clients.
    pub clients: u64,
    /// Operations per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed operations.
    pub errors: u64,
}

/// One server's memory and disk after the load.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    /// Label.
    pub label: String,
    /// Sum over the members of their peak resident set, KiB.
    pub peak_rss_kib: u64,
    /// Sum over the members of their data directories, bytes.
    pub data_dir_bytes: u64,
    /// Keys loaded.
    pub keys: u64,
    /// Value size, bytes.
    pub val_size: u64,
}

/// Everything read from a directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// Benchmark runs.
    pub runs: Vec<Run>,
    /// Resource records.
    pub resources: Vec<Resources>,
}

/// `bench report DIR`: prints the markdown tables.
pub fn run(args: &ReportArgs) -> Result<(), CtlError> {
    let collected = read_dir(&args.dir)?;
    crate::commands::emit(&markdown(&collected, &args.baseline, &args.candidate))
}

/// Reads every `*.json` file of `dir` (one object each).
pub fn read_dir(dir: &Path) -> Result<Collected, CtlError> {
    let io = |e: std::io::Error| CtlError::new(ExitCode::Io, format!("{}: {e}", dir.display()));
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut collected = Collected::default();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CtlError::new(ExitCode::Io, format!("{}: {e}", path.display())))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            CtlError::invalid_input(format!("{}: not a JSON object: {e}", path.display()))
        })?;
        parse(&value, &mut collected)
            .map_err(|field| CtlError::invalid_input(format!("{}: {field}", path.display())))?;
    }
    Ok(collected)
}

/// Adds one JSON object (a run or a resource record) to `collected`.
pub fn parse(value: &Value, collected: &mut Collected) -> Result<(), String> {
    let text = |name: &str| {
        value[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("missing text field {name:?}"))
    };
    let int = |name: &str| {
        value[name]
            .as_u64()
            .ok_or_else(|| format!("missing integer field {name:?}"))
    };
    let float = |v: &Value, name: &str| {
        v[name]
            .as_f64()
            .ok_or_else(|| format!("missing number field {name:?}"))
    };
    if value["kind"] == "resources" {
        collected.resources.push(Resources {
            label: text("label")?,
            peak_rss_kib: int("peak_rss_kib")?,
            data_dir_bytes: int("data_dir_bytes")?,
            keys: int("keys")?,
            val_size: int("val_size")?,
        });
        return Ok(());
    }
    let mut workload = text("workload")?;
    if value["serializable"] == true {
        workload.push_str(" (serializable)");
    }
    let latency = &value["latency_ms"];
    collected.runs.push(Run {
        workload,
        label: text("label")?,
        clients: int("clients")?,
        throughput: float(value, "throughput")?,
        p50_ms: float(latency, "p50")?,
        p99_ms: float(latency, "p99")?,
        errors: int("errors")?,
    });
    Ok(())
}

/// The median of `values` (the mean of the two middle ones for an even
/// count); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians of one label's runs in one group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Medians {
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    rounds: usize,
    errors: u64,
}

fn medians(runs: &[&Run]) -> Medians {
    let pick = |f: fn(&Run) -> f64| median(&mut runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    Medians {
        throughput: pick(|r| r.throughput),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        rounds: runs.len(),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

/// Where a workload goes in the table: the ones the targets name first.
fn workload_rank(workload: &str) -> usize {
    const ORDER: [&str; 8] = [
        "put",
        "get",
        "get (serializable)",
        "txn-put",
        "range",
        "mixed",
        "watch",
        "lease-keepalive",
    ];
    ORDER
        .iter()
        .position(|w| *w == workload)
        .unwrap_or(ORDER.len())
}

/// The tables, in markdown.
pub fn markdown(collected: &Collected, baseline: &str, candidate: &str) -> String {
    let mut groups: BTreeMap<(usize, String, u64), Vec<&Run>> = BTreeMap::new();
    for run in &collected.runs {
        let key = (
            workload_rank(&run.workload),
            run.workload.clone(),
            run.clients,
        );
        groups.entry(key).or_default().push(run);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Medians over rounds. Ratios are {candidate}/{baseline}: above 1 is better for \
         throughput, below 1 is better for latency.\n"
    );
    let _ = writeln!(
        out,
        "| workload | clients | {baseline} ops/s | {candidate} ops/s | ratio | {baseline} p50 ms | {candidate} p50 ms | ratio | {baseline} p99 ms | {candidate} p99 ms | ratio | rounds | errors ({baseline}/{candidate}) |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for ((_, workload, clients), runs) in &groups {
        let of = |label: &str| {
            let runs: Vec<&Run> = runs.iter().copied().filter(|r| r.label == label).collect();
            medians(&runs)
        };
        let (b, c) = (of(baseline), of(candidate));
        let _ = writeln!(
            out,
            "| {workload} | {clients} | {:.0} | {:.0} | {} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {} | {} | {}/{} |",
            b.throughput,
            c.throughput,
            ratio(c.throughput, b.throughput),
            b.p50_ms,
            c.p50_ms,
            ratio(c.p50_ms, b.p50_ms),
            b.p99_ms,
            c.p99_ms,
            ratio(c.p99_ms, b.p99_ms),
            b.rounds.min(c.rounds),
            b.errors,
            c.errors
        );
    }
    if !collected.resources.is_empty() {
        let _ = writeln!(
            out,
            "\n| server | keys loaded | value size | peak RSS, sum of 3 members (MiB) | data dirs, sum (MiB) |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|");
        for r in &collected.resources {
            let _ = writeln!(
                out,
                "| {} | {} | {} B | {:.1} | {:.1} |",
                r.label,
                r.keys,
                r.val_size,
                r.peak_rss_kib as f64 / 1024.0,
                r.data_dir_bytes as f64 / (1024.0 * 1024.0)
            );
        }
        let find = |label: &str| collected.resources.iter().find(|r| r.label == label);
        if let (Some(b), Some(c)) = (find(baseline), find(candidate)) {
            let _ = writeln!(
                out,
                "| ratio {candidate}/{baseline} | | | {} | {} |",
                ratio(c.peak_rss_kib as f64, b.peak_rss_kib as f64),
                ratio(c.data_dir_bytes as f64, b.data_dir_bytes as f64)
            );
        }
    }
    out
}

fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 && numerator > 0.0 {
        format!("{:.2}", numerator / denominator)
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_json(label: &str, clients: u64, throughput: f64, p50: f64, p99: f64) -> Value {
        json!({
            "workload": "put", "label": label, "clients": clients, "serializable": false,
            "throughput": throughput, "errors": 0,
            "latency_ms": {"p50": p50, "p99": p99},
        })
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn the_table_shows_medians_and_ratios() {
        let mut collected = Collected::default();
        for (t, p50) in [(100.0, 1.0), (300.0, 3.0), (200.0, 2.0)] {
            parse(&run_json("etcd", 64, t, p50, 10.0), &mut collected).unwrap();
            parse(
                &run_json("raftkv", 64, 2.0 * t, p50 / 2.0, 5.0),
                &mut collected,
            )
            .unwrap();
        }
        parse(
            &json!({"kind": "resources", "label": "etcd", "peak_rss_kib": 2048,
                    "data_dir_bytes": 1048576, "keys": 10, "val_size": 256}),
            &mut collected,
        )
        .unwrap();
        parse(
            &json!({"kind": "resources", "label": "raftkv", "peak_rss_kib": 1024,
                    "data_dir_bytes": 2097152, "keys": 10, "val_size": 256}),
            &mut collected,
        )
        .unwrap();
        let md = markdown(&collected, "etcd", "raftkv");
        assert!(
            md.contains("| put | 64 | 200 | 400 | 2.00 | 2.000 | 1.000 | 0.50 | 10.000 | 5.000 | 0.50 | 3 | 0/0 |"),
            "{md}"
        );
        assert!(md.contains("| etcd | 10 | 256 B | 2.0 | 1.0 |"), "{md}");
        assert!(
            md.contains("| ratio raftkv/etcd | | | 0.50 | 2.00 |"),
            "{md}"
        );
    }

    #[test]
    fn groups_are_ordered_by_workload_then_clients() {
        let mut collected = Collected::default();
        let mut get = run_json("etcd", 1, 1.0, 1.0, 1.0);
        get["workload"] = json!("get");
        get["serializable"] = json!(true);
        parse(&get, &mut collected).unwrap();
        parse(&run_json("etcd", 256, 1.0, 1.0, 1.0), &mut collected).unwrap();
        parse(&run_json("etcd", 16, 1.0, 1.0, 1.0), &mut collected).unwrap();
        let md = markdown(&collected, "etcd", "raftkv");
        let put16 = md.find("| put | 16 |").unwrap();
        let put256 = md.find("| put | 256 |").unwrap();
        let get = md.find("| get (serializable) | 1 |").unwrap();
        assert!(put16 < put256 && put256 < get, "{md}");
        assert!(md.contains("n/a"));
    }

    #[test]
    fn a_record_without_its_fields_is_refused() {
        let mut collected = Collected::default();
        assert!(parse(&json!({"workload": "put"}), &mut collected).is_err());
        assert!(parse(&json!({"kind": "resources"}), &mut collected).is_err());
    }
}
