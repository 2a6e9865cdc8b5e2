//! etcd's watch guarantees, checked on recorded watch streams against the
//! store's authoritative event history.
//!
//! etcd promises (see "Watch" in its API guarantees) that a watch stream is
//! **ordered** (revisions never go back), **unique** (no event twice),
//! **atomic** (a revision's events arrive in one response, unless split
//! into fragments), **reliable** (no gap: every event in range between the
//! start and what was received is delivered), **resumable** (reopening
//! after the last revision seen loses nothing) and **bookmarkable** (a
//! progress notification at revision R means nothing at or below R is
//! still to come). Events must also carry what the store recorded.
//!
//! The reference is every event of the store in revision order, recorded
//! afterwards by one fresh watch from revision 1; a stream is compared with
//! the part of it the stream covers.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether an event wrote or deleted its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One event as a watch delivered it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The revision of the change (the key-value's `mod_revision`).
    pub revision: i64,
    /// The key changed.
    pub key: String,
    /// Put or delete.
    pub kind: EventKind,
    /// The value written; `None` for a delete.
    pub value: Option<String>,
}

/// One response of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    /// The store's revision when the response was sent.
    pub header_revision: i64,
    /// The events, in order.
    pub events: Vec<WatchEvent>,
    /// A progress notification (no events): everything up to
    /// `header_revision` was delivered.
    pub progress_notify: bool,
    /// More fragments of the same events follow.
    pub fragment: bool,
}

/// What one watcher received, over all the times its stream was opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStream {
    /// The watcher's id.
    pub watcher: u64,
    /// The key watched, or the start of the range.
    pub key: String,
    /// etcd's range end: `None` for the key alone, `"\0"` for every key
    /// from `key` on, otherwise the exclusive end.
    pub range_end: Option<String>,
    /// The first revision asked for; 0 or less means "from now", and then
    /// the check starts at the first event received.
    pub start_revision: i64,
    /// The responses, in the order received.
    pub responses: Vec<WatchResponse>,
    /// Indexes into `responses` where the stream was reopened (resumed from
    /// the last revision seen + 1).
    pub restarts: Vec<usize>,
}

/// A watch guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Revisions never go back.
    Ordered,
    /// No event delivered twice.
    Unique,
    /// A revision's events arrive together.
    Atomic,
    /// No gap, no event the store does not have, none outside the range.
    Reliable,
    /// No gap across a reopened stream.
    Resumable,
    /// Nothing at or below a progress notification's revision comes later.
    Bookmarkable,
    /// An event carries the kind and value the store recorded.
    Contents,
}

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchViolation {
    /// The watcher whose stream broke it.
    pub watcher: u64,
    /// Which guarantee.
    pub guarantee: Guarantee,
    /// What happened, in words.
    pub message: String,
}

/// The result of checking watch streams; no violation is a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchReport {
    /// Streams checked.
    pub streams: usize,
    /// Every violation found (at most [`MAX_REPORTED`] per stream and
    /// guarantee, then a count of the rest).
    pub violations: Vec<WatchViolation>,
}

/// Violations reported per stream and guarantee before the rest are only
/// counted.
pub const MAX_REPORTED: usize = 5;

impl WatchReport {
    /// True when every guarantee held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for WatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return writeln!(f, "watch guarantees held on {} streams", self.streams);
        }
        writeln!(
            f,
            "watch guarantees broken: {} violations on {} streams",
            self.violations.len(),
            self.streams
        )?;
        for v in &self.violations {
            writeln!(
                f,
                "  watcher {} {:?}: {}",
                v.watcher, v.guarantee, v.message
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.value) {
            (EventKind::Put, Some(value)) => {
                write!(f, "put {:?} = {value:?} @{}", self.key, self.revision)
            }
            (EventKind::Put, None) => write!(f, "put {:?} @{}", self.key, self.revision),
            (EventKind::Delete, _) => write!(f, "delete {:?} @{}", self.key, self.revision),
        }
    }
}

impl WatchStream {
    /// Whether the stream's range holds `key`, by etcd's rules.
    pub fn covers(&self, key: &str) -> bool {
        match self.range_end.as_deref() {
            None => key == self.key,
            Some("\0") => key >= self.key.as_str(),
            Some(end) => key >= self.key.as_str() && key < end,
        }
    }
}

/// Collects one stream's violations, capped per guarantee.
struct Findings<'a> {
    watcher: u64,
    counts: HashMap<Guarantee, usize>,
    out: &'a mut Vec<WatchViolation>,
}

impl Findings<'_> {
    fn add(&mut self, guarantee: Guarantee, message: String) {
        let count = self.counts.entry(guarantee).or_default();
        *count += 1;
        if *count <= MAX_REPORTED {
            self.out.push(WatchViolation {
                watcher: self.watcher,
                guarantee,
                message,
            });
        }
    }

    fn finish(self) {
        let mut over: Vec<(Guarantee, usize)> = self
            .counts
            .into_iter()
            .filter(|&(_, n)| n > MAX_REPORTED)
            .collect();
        over.sort_by_key(|&(g, _)| g as u8);
        for (guarantee, n) in over {
            self.out.push(WatchViolation {
                watcher: self.watcher,
                guarantee,
                message: format!("... and {} more like these", n - MAX_REPORTED),
            });
        }
    }
}

/// Checks every stream against `reference`, the store's events in
/// revision order.
pub fn check_watches(reference: &[WatchEvent], streams: &[WatchStream]) -> WatchReport {
    let by_identity: HashMap<(i64, &str), &WatchEvent> = reference
        .iter()
        .map(|e| ((e.revision, e.key.as_str()), e))
        .collect();
    let mut violations = Vec::new();
    for stream in streams {
        let mut findings = Findings {
            watcher: stream.watcher,
            counts: HashMap::new(),
            out: &mut violations,
        };
        check_stream(reference, &by_identity, stream, &mut findings);
        findings.finish();
    }
    WatchReport {
        streams: streams.len(),
        violations,
    }
}

fn check_stream(
    reference: &[WatchEvent],
    by_identity: &HashMap<(i64, &str), &WatchEvent>,
    stream: &WatchStream,
    findings: &mut Findings<'_>,
) {
    let mut seen: HashSet<(i64, &str)> = HashSet::new();
    let mut last_revision: Option<i64> = None;
    let mut bookmark: Option<(i64, usize)> = None;
    // The revision the previous response ended with, and whether it was a
    // fragment to be continued.
    let mut previous_end: Option<(i64, bool, usize)> = None;
    let mut first_revision: Option<i64> = None;
    for (index, response) in stream.responses.iter().enumerate() {
        let restarted = stream.restarts.contains(&index);
        if restarted {
            previous_end = None;
        }
        if response.progress_notify && response.events.is_empty() {
            let at = response.header_revision;
            if bookmark.is_none_or(|(r, _)| at > r) {
                bookmark = Some((at, index));
            }
            continue;
        }
        if let (Some(first), Some((revision, fragment, at))) =
            (response.events.first(), previous_end)
        {
            // A repeated event is a duplicate (Unique), not a split.
            let repeated = seen.contains(&(first.revision, first.key.as_str()));
            if first.revision == revision && !fragment && !repeated {
                findings.add(
                    Guarantee::Atomic,
                    format!(
                        "revision {revision} is split between responses {at} and {index}, \
                         and response {at} is not a fragment"
                    ),
                );
            }
        }
        for event in &response.events {
            first_revision.get_or_insert(event.revision);
            if let Some(last) = last_revision.filter(|&last| event.revision < last) {
                findings.add(
                    Guarantee::Ordered,
                    format!("response {index}: {event} after revision {last}"),
                );
            }
            last_revision = Some(last_revision.map_or(event.revision, |l| l.max(event.revision)));
            if !seen.insert((event.revision, event.key.as_str())) {
                findings.add(
                    Guarantee::Unique,
                    format!("response {index}: {event} delivered again"),
                );
            }
            if let Some((at, notified)) = bookmark.filter(|&(at, _)| event.revision <= at) {
                findings.add(
                    Guarantee::Bookmarkable,
                    format!(
                        "response {index}: {event} after the progress notification at \
                         revision {at} (response {notified})"
                    ),
                );
            }
            check_event(by_identity, stream, index, event, findings);
        }
        if let Some(last) = response.events.last() {
            previous_end = Some((last.revision, response.fragment, index));
        }
    }
    check_gaps(
        reference,
        stream,
        &seen,
        first_revision,
        last_revision,
        bookmark,
        findings,
    );
}

/// The event is in range, after the start, and the store's own.
fn check_event(
    by_identity: &HashMap<(i64, &str), &WatchEvent>,
    stream: &WatchStream,
    index: usize,
    event: &WatchEvent,
    findings: &mut Findings<'_>,
) {
    if !stream.covers(&event.key) {
        findings.add(
            Guarantee::Reliable,
            format!("response {index}: {event} is outside the watched range"),
        );
    } else if stream.start_revision > 0 && event.revision < stream.start_revision {
        findings.add(
            Guarantee::Reliable,
            format!(
                "response {index}: {event} is before the start revision {}",
                stream.start_revision
            ),
        );
    }
    match by_identity.get(&(event.revision, event.key.as_str())) {
        None => findings.add(
            Guarantee::Reliable,
            format!("response {index}: {event} is not in the store's history"),
        ),
        Some(stored) if stored.kind != event.kind || stored.value != event.value => findings.add(
            Guarantee::Contents,
            format!("response {index}: {event}, but the store recorded {stored}"),
        ),
        Some(_) => {}
    }
}

/// Every event of the reference the stream covers, from its start to the
/// last revision it received or was told of, was received.
fn check_gaps(
    reference: &[WatchEvent],
    stream: &WatchStream,
    seen: &HashSet<(i64, &str)>,
    first_revision: Option<i64>,
    last_revision: Option<i64>,
    bookmark: Option<(i64, usize)>,
    findings: &mut Findings<'_>,
) {
    let start = if stream.start_revision > 0 {
        stream.start_revision
    } else {
        match first_revision {
            Some(first) => first,
            None => return,
        }
    };
    let end = last_revision.max(bookmark.map(|(r, _)| r));
    let Some(end) = end else { return };
    // Revision ranges skipped by a reopened stream: (last before, first after).
    let resumes = resume_gaps(stream);
    for event in reference {
        if event.revision < start || event.revision > end || !stream.covers(&event.key) {
            continue;
        }
        if seen.contains(&(event.revision, event.key.as_str())) {
            continue;
        }
        match resumes
            .iter()
            .find(|&&(before, after)| before < event.revision && event.revision < after)
        {
            Some((before, after)) => findings.add(
                Guarantee::Resumable,
                format!(
                    "{event} missing: the stream was reopened after revision {before} \
                     and resumed at revision {after}"
                ),
            ),
            None => findings.add(
                Guarantee::Reliable,
                format!("{event} missing (the stream reached revision {end})"),
            ),
        }
    }
}

/// For each restart, the last revision received before it and the first
/// after it.
fn resume_gaps(stream: &WatchStream) -> Vec<(i64, i64)> {
    let revision_at = |range: &[WatchResponse], last: bool| {
        let mut revisions = range
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.revision));
        if last {
            revisions.next_back()
        } else {
            revisions.next()
        }
    };
    stream
        .restarts
        .iter()
        .filter_map(|&at| {
            let at = at.min(stream.responses.len());
            let before = revision_at(&stream.responses[..at], true)
                .unwrap_or(stream.start_revision.max(1) - 1);
            let after = revision_at(&stream.responses[at..], false)?;
            Some((before, after))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str, value: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.into(),
            kind: EventKind::Put,
            value: Some(value.into()),
        }
    }

    fn del(revision: i64, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.into(),
            kind: EventKind::Delete,
            value: None,
        }
    }

    fn response(events: Vec<WatchEvent>) -> WatchResponse {
        WatchResponse {
            header_revision: events.last().map_or(0, |e| e.revision),
            events,
            progress_notify: false,
            fragment: false,
        }
    }

    fn progress(revision: i64) -> WatchResponse {
        WatchResponse {
            header_revision: revision,
            events: vec![],
            progress_notify: true,
            fragment: false,
        }
    }

    /// Revision 2 writes a and b in one txn; c is outside "a".."c".
    fn reference() -> Vec<WatchEvent> {
        vec![
            put(1, "a", "1"),
            put(2, "a", "2"),
            put(2, "b", "2"),
            put(3, "c", "3"),
            del(4, "b"),
            put(5, "a", "5"),
        ]
    }

    fn stream(responses: Vec<WatchResponse>) -> WatchStream {
        WatchStream {
            watcher: 7,
            key: "a".into(),
            range_end: Some("c".into()),
            start_revision: 1,
            responses,
            restarts: vec![],
        }
    }

    fn good() -> WatchStream {
        stream(vec![
            response(vec![put(1, "a", "1")]),
            response(vec![put(2, "a", "2"), put(2, "b", "2")]),
            progress(3),
            response(vec![del(4, "b")]),
            response(vec![put(5, "a", "5")]),
        ])
    }

    fn violations(stream: WatchStream) -> Vec<Guarantee> {
        let report = check_watches(&reference(), &[stream]);
        report.violations.iter().map(|v| v.guarantee).collect()
    }

    #[test]
    fn a_good_stream_passes() {
        let report = check_watches(&reference(), &[good()]);
        assert!(report.passed(), "{report}");
        assert_eq!(report.streams, 1);
    }

    #[test]
    fn a_single_key_watch_and_a_from_key_watch_pass() {
        let single = WatchStream {
            key: "b".into(),
            range_end: None,
            start_revision: 2,
            responses: vec![
                response(vec![put(2, "b", "2")]),
                response(vec![del(4, "b")]),
            ],
            ..good()
        };
        let from_b = WatchStream {
            key: "b".into(),
            range_end: Some("\0".into()),
            start_revision: 3,
            responses: vec![response(vec![put(3, "c", "3"), del(4, "b")])],
            ..good()
        };
        let report = check_watches(&reference(), &[single, from_b]);
        assert!(report.passed(), "{report}");
    }

    #[test]
    fn going_back_breaks_ordered() {
        let mut s = good();
        s.responses.swap(3, 4);
        assert!(violations(s).contains(&Guarantee::Ordered));
    }

    #[test]
    fn an_event_twice_breaks_unique() {
        let mut s = good();
        s.responses.insert(1, response(vec![put(1, "a", "1")]));
        assert_eq!(violations(s), [Guarantee::Unique]);
    }

    #[test]
    fn a_revision_split_across_responses_breaks_atomic_unless_fragmented() {
        let mut s = good();
        s.responses[1] = response(vec![put(2, "a", "2")]);
        s.responses.insert(2, response(vec![put(2, "b", "2")]));
        assert_eq!(violations(s.clone()), [Guarantee::Atomic]);
        s.responses[1].fragment = true;
        assert_eq!(violations(s), []);
    }

    #[test]
    fn a_gap_breaks_reliable() {
        let mut s = good();
        s.responses.remove(3);
        let report = check_watches(&reference(), &[s]);
        assert_eq!(report.violations.len(), 1, "{report}");
        assert_eq!(report.violations[0].guarantee, Guarantee::Reliable);
        assert!(report.violations[0]
            .message
            .contains("delete \"b\" @4 missing"));
    }

    #[test]
    fn a_missing_event_up_to_a_progress_notification_breaks_reliable() {
        let s = stream(vec![response(vec![put(1, "a", "1")]), progress(2)]);
        assert_eq!(violations(s), [Guarantee::Reliable, Guarantee::Reliable]);
    }

    #[test]
    fn events_outside_the_range_or_unknown_to_the_store_break_reliable() {
        let mut s = good();
        s.responses.insert(2, response(vec![put(3, "c", "3")]));
        assert_eq!(violations(s), [Guarantee::Reliable]);
        let mut s = good();
        s.responses.push(response(vec![put(9, "a", "9")]));
        // Not in the store; and the store's history ends before 9, so no gap.
        assert_eq!(violations(s), [Guarantee::Reliable]);
    }

    #[test]
    fn a_resumed_stream_that_skips_breaks_resumable() {
        let mut s = good();
        s.restarts = vec![3];
        assert_eq!(violations(s.clone()), []);
        s.responses.remove(3);
        assert_eq!(violations(s), [Guarantee::Resumable]);
    }

    #[test]
    fn an_event_below_a_progress_notification_breaks_bookmarkable() {
        let mut s = good();
        s.responses[2] = progress(4);
        assert!(violations(s).contains(&Guarantee::Bookmarkable));
    }

    #[test]
    fn a_wrong_value_or_kind_breaks_contents() {
        let mut s = good();
        s.responses[4] = response(vec![put(5, "a", "wrong")]);
        s.responses[3] = response(vec![put(4, "b", "x")]);
        assert_eq!(violations(s), [Guarantee::Contents, Guarantee::Contents]);
    }

    #[test]
    fn many_gaps_are_counted_not_all_listed() {
        let reference: Vec<WatchEvent> = (1..=20).map(|r| put(r, "a", "v")).collect();
        let s = WatchStream {
            responses: vec![response(vec![put(20, "a", "v")])],
            ..good()
        };
        let report = check_watches(&reference, &[s]);
        assert_eq!(report.violations.len(), MAX_REPORTED + 1, "{report}");
        assert!(report.violations[MAX_REPORTED].message.contains("14 more"));
    }
}
