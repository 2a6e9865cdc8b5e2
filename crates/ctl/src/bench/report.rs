//! `bench report DIR`: the comparison table of many runs, as markdown.
//!
//! The comparison script saves each run's `--json` object in a file of DIR
//! and, for each server, records of what it measured outside the runs:
//!
//! - `{"kind": "resources", "label", "peak_rss_kib", "data_dir_bytes", "keys", "val_size"}`;
//! - `{"kind": "store-size", "label", "members", "keys", "val_size_min", "val_size_max",
//!   "live_bytes", "db_size", "db_size_in_use", "data_dir_bytes"}`;
//! - `{"kind": "quota", "label", "members", "quota_bytes", "nospace", "keys",
//!   "live_bytes", "db_size", "db_size_in_use"}` (`live_bytes` when NOSPACE came).
//!
//! Runs are grouped by workload (and read consistency, or leases kept
//! alive) and client count; each group shows the median over rounds of
//! each label's throughput, p50 and p99, and the candidate/baseline ratio.
//! Medians, because a drifting machine spoils single rounds, not the middle
//! one. The records make one table each, a row per server and a row of
//! ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::{Part, ReportArgs};
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

/// One server's store after it was written with new keys of log-uniform
/// sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreSize {
    /// Label.
    pub label: String,
    /// Members of the cluster measured.
    pub members: u64,
    /// Keys written.
    pub keys: u64,
    /// Smallest and largest value, bytes.
    pub val_size: (u64, u64),
    /// Sum of the keys' and values' sizes, bytes.
    pub live_bytes: u64,
    /// Maintenance Status dbSize, bytes.
    pub db_size: u64,
    /// Maintenance Status dbSizeInUse, bytes.
    pub db_size_in_use: u64,
    /// `du -sb` of the data directories, bytes.
    pub data_dir_bytes: u64,
}

/// One server written until NOSPACE under a backend quota.
#[derive(Clone, Debug, PartialEq)]
pub struct Quota {
    /// Label.
    pub label: String,
    /// `--quota-backend-bytes`.
    pub quota_bytes: u64,
    /// Whether NOSPACE came (else the run's bound ended it).
    pub nospace: bool,
    /// Keys written before it.
    pub keys: u64,
    /// Key and value bytes written before it.
    pub live_bytes: u64,
    /// dbSize and dbSizeInUse after it, bytes.
    pub db_size: u64,
    /// dbSizeInUse after it, bytes.
    pub db_size_in_use: u64,
}

/// Everything read from a directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// Benchmark runs.
    pub runs: Vec<Run>,
    /// Resource records.
    pub resources: Vec<Resources>,
    /// Store-size records.
    pub store_sizes: Vec<StoreSize>,
    /// Quota records.
    pub quotas: Vec<Quota>,
}

/// `bench report DIR`: prints the markdown tables.
pub fn run(args: &ReportArgs) -> Result<(), CtlError> {
    let collected = read_dir(&args.dir)?;
    let text = markdown(&collected, args.part, &args.baseline, &args.candidate);
    crate::commands::emit(&text)
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
    match value["kind"].as_str() {
        Some("resources") => {
            collected.resources.push(Resources {
                label: text("label")?,
                peak_rss_kib: int("peak_rss_kib")?,
                data_dir_bytes: int("data_dir_bytes")?,
                keys: int("keys")?,
                val_size: int("val_size")?,
            });
            return Ok(());
        }
        Some("store-size") => {
            collected.store_sizes.push(StoreSize {
                label: text("label")?,
                members: int("members")?,
                keys: int("keys")?,
                val_size: (int("val_size_min")?, int("val_size_max")?),
                live_bytes: int("live_bytes")?,
                db_size: int("db_size")?,
                db_size_in_use: int("db_size_in_use")?,
                data_dir_bytes: int("data_dir_bytes")?,
            });
            return Ok(());
        }
        Some("quota") => {
            collected.quotas.push(Quota {
                label: text("label")?,
                quota_bytes: int("quota_bytes")?,
                nospace: value["nospace"]
                    .as_bool()
                    .ok_or("missing boolean field \"nospace\"")?,
                keys: int("keys")?,
                live_bytes: int("live_bytes")?,
                db_size: int("db_size")?,
                db_size_in_use: int("db_size_in_use")?,
            });
            return Ok(());
        }
        Some(other) => return Err(format!("unknown record kind {other:?}")),
        None => {}
    }
    let mut workload = text("workload")?;
    if value["serializable"] == true {
        workload.push_str(" (serializable)");
    }
    if let Some(leases) = value["leases"].as_u64().filter(|n| *n > 0) {
        let _ = write!(workload, " ({leases} leases)");
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
    // `lease-keepalive (1000 leases)` ranks as `lease-keepalive`.
    let base = workload.split(" (").next().unwrap_or(workload);
    ORDER
        .iter()
        .position(|w| *w == workload)
        .or_else(|| ORDER.iter().position(|w| *w == base))
        .unwrap_or(ORDER.len())
}

/// The tables of `part`, in markdown.
pub fn markdown(collected: &Collected, part: Part, baseline: &str, candidate: &str) -> String {
    let wants = |one: Part| part == Part::All || part == one;
    let mut out = String::new();
    if wants(Part::Runs) {
        runs_table(&mut out, collected, baseline, candidate);
    }
    let pair = (baseline, candidate);
    if wants(Part::Resources) && !collected.resources.is_empty() {
        let rows = collected.resources.iter().map(|r| {
            let cells = vec![
                Cell::plain(r.keys),
                Cell::plain(format!("{} B", r.val_size)),
                Cell::mib(r.peak_rss_kib * 1024),
                Cell::mib(r.data_dir_bytes),
            ];
            (r.label.as_str(), cells)
        });
        let header = [
            "keys loaded",
            "value size",
            "peak RSS, sum of 3 members (MiB)",
            "data dirs, sum (MiB)",
        ];
        server_table(&mut out, &header, rows, pair);
    }
    if wants(Part::StoreSize) && !collected.store_sizes.is_empty() {
        let rows = collected.store_sizes.iter().map(|r| {
            let cells = vec![
                Cell::plain(r.members),
                Cell::plain(r.keys),
                Cell::plain(format!("{} B to {} B", r.val_size.0, r.val_size.1)),
                Cell::mib(r.live_bytes),
                Cell::mib(r.db_size),
                Cell::mib(r.db_size_in_use),
                Cell::mib(r.data_dir_bytes),
                Cell::share(r.db_size, r.live_bytes),
                Cell::share(r.data_dir_bytes, r.live_bytes),
            ];
            (r.label.as_str(), cells)
        });
        let header = [
            "members",
            "keys written",
            "values (log-uniform)",
            "live: keys + values (MiB)",
            "dbSize (MiB)",
            "dbSizeInUse (MiB)",
            "data dir, du -sb (MiB)",
            "dbSize/live",
            "data dir/live",
        ];
        server_table(&mut out, &header, rows, pair);
    }
    if wants(Part::Quota) && !collected.quotas.is_empty() {
        let rows = collected.quotas.iter().map(|r| {
            let live = if r.nospace {
                Cell::mib(r.live_bytes)
            } else {
                let written = r.live_bytes as f64 / MIB;
                Cell::plain(format!("no NOSPACE ({written:.1} written)"))
            };
            let cells = vec![
                // The same on both: no ratio.
                Cell::plain(format!("{:.1}", r.quota_bytes as f64 / MIB)),
                Cell::plain(r.keys),
                live,
                Cell::share(r.live_bytes, r.quota_bytes),
                Cell::mib(r.db_size),
                Cell::mib(r.db_size_in_use),
            ];
            (r.label.as_str(), cells)
        });
        let header = [
            "quota (MiB)",
            "keys written before NOSPACE",
            "live at NOSPACE (MiB)",
            "live/quota",
            "dbSize after (MiB)",
            "dbSizeInUse after (MiB)",
        ];
        server_table(&mut out, &header, rows, pair);
    }
    out
}

/// The throughput and latency table of the runs.
fn runs_table(out: &mut String, collected: &Collected, baseline: &str, candidate: &str) {
    let mut groups: BTreeMap<(usize, String, u64), Vec<&Run>> = BTreeMap::new();
    for run in &collected.runs {
        let key = (
            workload_rank(&run.workload),
            run.workload.clone(),
            run.clients,
        );
        groups.entry(key).or_default().push(run);
    }
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
}

const MIB: f64 = 1024.0 * 1024.0;

/// A figure of a per-server table, and what its ratio row divides.
struct Cell {
    text: String,
    /// The figure the ratio row compares; `None`: the row leaves it blank.
    figure: Option<f64>,
}

impl Cell {
    fn plain(text: impl ToString) -> Self {
        Self {
            text: text.to_string(),
            figure: None,
        }
    }

    fn mib(bytes: u64) -> Self {
        let mib = bytes as f64 / MIB;
        Self {
            text: format!("{mib:.1}"),
            figure: Some(mib),
        }
    }

    /// `part/whole`, as a plain figure (a ratio of ratios says nothing
    /// the others do not).
    fn share(part: u64, whole: u64) -> Self {
        Self::plain(ratio(part as f64, whole as f64))
    }
}

/// A table of one row per server and, when both the baseline and the
/// candidate have one, a row of their ratios.
fn server_table<'a>(
    out: &mut String,
    header: &[&str],
    rows: impl Iterator<Item = (&'a str, Vec<Cell>)>,
    (baseline, candidate): (&str, &str),
) {
    let rows: Vec<(&str, Vec<Cell>)> = rows.collect();
    let _ = writeln!(out, "\n| server | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "--:|".repeat(header.len()));
    for (label, cells) in &rows {
        let texts = cells.iter().map(|c| c.text.as_str());
        let _ = writeln!(out, "{}", table_row(label, texts));
    }
    let find = |label: &str| rows.iter().find(|(l, _)| *l == label).map(|(_, c)| c);
    if let (Some(b), Some(c)) = (find(baseline), find(candidate)) {
        let ratios = b.iter().zip(c).map(|(b, c)| match (b.figure, c.figure) {
            (Some(b), Some(c)) => ratio(c, b),
            _ => String::new(),
        });
        let label = format!("ratio {candidate}/{baseline}");
        let _ = writeln!(out, "{}", table_row(&label, ratios));
    }
}

/// `| label | a | b |`, a blank cell as `| |`.
fn table_row<S: AsRef<str>>(label: &str, cells: impl Iterator<Item = S>) -> String {
    let mut line = format!("| {label} |");
    for cell in cells {
        match cell.as_ref() {
            "" => line.push_str(" |"),
            text => {
                let _ = write!(line, " {text} |");
            }
        }
    }
    line
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
        let md = markdown(&collected, Part::All, "etcd", "raftkv");
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
        let md = markdown(&collected, Part::All, "etcd", "raftkv");
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
        assert!(parse(
            &json!({"kind": "store-size", "label": "etcd"}),
            &mut collected
        )
        .is_err());
        assert!(parse(&json!({"kind": "quota", "label": "etcd"}), &mut collected).is_err());
        assert!(parse(&json!({"kind": "other"}), &mut collected).is_err());
    }

    #[test]
    fn keepalive_runs_are_named_by_their_leases_and_ranked_last() {
        let mut collected = Collected::default();
        let mut keepalive = run_json("etcd", 20, 5000.0, 1.0, 2.0);
        keepalive["workload"] = json!("lease-keepalive");
        keepalive["leases"] = json!(1000);
        parse(&keepalive, &mut collected).unwrap();
        let mut get = run_json("etcd", 1, 1.0, 1.0, 1.0);
        get["workload"] = json!("get");
        get["leases"] = json!(0);
        parse(&get, &mut collected).unwrap();
        let md = markdown(&collected, Part::All, "etcd", "raftkv");
        let keepalive = md
            .find("| lease-keepalive (1000 leases) | 20 | 5000 |")
            .unwrap();
        assert!(md.find("| get | 1 |").unwrap() < keepalive, "{md}");
    }

    #[test]
    fn store_size_and_quota_tables_show_each_server_and_the_ratios() {
        let mut collected = Collected::default();
        for (label, db) in [("etcd", 8u64), ("raftkv", 4)] {
            let mib = 1u64 << 20;
            parse(
                &json!({"kind": "store-size", "label": label, "members": 1, "keys": 40000,
                        "val_size_min": 10, "val_size_max": 65536, "live_bytes": 2 * mib,
                        "db_size": db * mib, "db_size_in_use": mib,
                        "data_dir_bytes": 10 * mib}),
                &mut collected,
            )
            .unwrap();
            parse(
                &json!({"kind": "quota", "label": label, "quota_bytes": 256 * mib,
                        "nospace": label == "etcd", "keys": 100, "live_bytes": 64 * db * mib,
                        "db_size": 256 * mib, "db_size_in_use": 200 * mib}),
                &mut collected,
            )
            .unwrap();
        }
        let md = markdown(&collected, Part::All, "etcd", "raftkv");
        assert!(
            md.contains(
                "| etcd | 1 | 40000 | 10 B to 65536 B | 2.0 | 8.0 | 1.0 | 10.0 | 4.00 | 5.00 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ratio raftkv/etcd | | | | 1.00 | 0.50 | 1.00 | 1.00 | | |"),
            "{md}"
        );
        assert!(
            md.contains("| etcd | 256.0 | 100 | 512.0 | 2.00 | 256.0 | 200.0 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| raftkv | 256.0 | 100 | no NOSPACE (256.0 written) | 1.00 | 256.0 | 200.0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ratio raftkv/etcd | | | | | 1.00 | 1.00 |"),
            "{md}"
        );
    }
}
