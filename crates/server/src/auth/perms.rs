//! Key-range permissions as etcd checks them: a role's permissions are
//! half-open key intervals; a user's are the union over its roles, one set
//! for reading and one for writing.
//!
//! A permission `(key, range_end)` covers the key alone when `range_end` is
//! empty, every key from `key` on when it is `"\0"`, and `[key, range_end)`
//! otherwise. A request on one key is allowed when some interval holds it; a
//! request on a range only when the union covers the whole range (touching
//! intervals join, as in etcd's interval tree).

use raftkv_proto::authpb::{permission::Type as PermType, Permission};

/// A half-open key interval; `end` None is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// The interval of a permission or request `(key, range_end)`, with
    /// `range_end` not empty.
    fn range(key: &[u8], range_end: &[u8]) -> Self {
        let end = if range_end == [0] {
            None
        } else {
            Some(range_end.to_vec())
        };
        Self {
            start: key.to_vec(),
            end,
        }
    }

    /// The interval of the key alone: `[key, key + "\0")`.
    fn point(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        Self {
            start: key.to_vec(),
            end: Some(end),
        }
    }
}

/// A union of intervals, kept sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct IntervalSet {
    merged: Vec<Interval>,
}

impl IntervalSet {
    fn from_intervals(mut intervals: Vec<Interval>) -> Self {
        intervals.sort_by(|a, b| a.start.cmp(&b.start));
        let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
        for next in intervals {
            if let Some(last) = merged.last_mut() {
                let touches = match &last.end {
                    None => true,
                    Some(end) => next.start <= *end,
                };
                if touches {
                    last.end = match (last.end.take(), next.end) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                    continue;
                }
            }
            merged.push(next);
        }
        Self { merged }
    }

    /// The merged interval starting at or before `key`, if any.
    fn at_or_before(&self, key: &[u8]) -> Option<&Interval> {
        let after = self.merged.partition_point(|i| i.start.as_slice() <= key);
        after.checked_sub(1).and_then(|i| self.merged.get(i))
    }

    fn holds(&self, key: &[u8]) -> bool {
        self.at_or_before(key).is_some_and(|i| match &i.end {
            None => true,
            Some(end) => key < end.as_slice(),
        })
    }

    fn covers(&self, wanted: &Interval) -> bool {
        self.at_or_before(&wanted.start)
            .is_some_and(|i| match (&i.end, &wanted.end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(have), Some(want)) => want <= have,
            })
    }
}

/// What a request needs of a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, a compare, watch, prev_kv.
    Read,
    /// Put, delete.
    Write,
}

/// One user's permissions, merged over its roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPermissions {
    read: IntervalSet,
    write: IntervalSet,
}

impl UserPermissions {
    /// The union of `permissions` (of all the user's roles).
    pub fn merge<'a>(permissions: impl IntoIterator<Item = &'a Permission>) -> Self {
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for perm in permissions {
            let interval = if perm.range_end.is_empty() {
                Interval::point(&perm.key)
            } else {
                Interval::range(&perm.key, &perm.range_end)
            };
            match PermType::try_from(perm.perm_type) {
                Ok(PermType::Read) => read.push(interval),
                Ok(PermType::Write) => write.push(interval),
                Ok(PermType::Readwrite) => {
                    read.push(interval.clone());
                    write.push(interval);
                }
                // An unknown type grants nothing.
                Err(_) => {}
            }
        }
        Self {
            read: IntervalSet::from_intervals(read),
            write: IntervalSet::from_intervals(write),
        }
    }

    /// Whether `access` to `(key, range_end)` is allowed (a request's key
    /// conventions: empty `range_end` is the key alone, `"\0"` every key
    /// from `key` on).
    pub fn allows(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            set.holds(key)
        } else {
            set.covers(&Interval::range(key, range_end))
        }
    }
}

/// Whether `(key, range_end)` may be granted: a key, and a range end that
/// is empty, `"\0"`, or after the key (etcd's rule).
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermType, key: &str, range_end: &str) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec(),
            range_end: range_end.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_single_key_permission_allows_that_key_only() {
        let perms = UserPermissions::merge(&[perm(PermType::Read, "foo", "")]);
        assert!(perms.allows(Access::Read, b"foo", b""));
        assert!(!perms.allows(Access::Read, b"foo0", b""));
        assert!(!perms.allows(Access::Write, b"foo", b""));
        // A range of just that key is covered: [foo, foo\0).
        assert!(perms.allows(Access::Read, b"foo", b"foo\0"));
        assert!(!perms.allows(Access::Read, b"foo", b"fop"));
    }

    #[test]
    fn a_prefix_permission_covers_ranges_inside_it_only() {
        let perms = UserPermissions::merge(&[perm(PermType::Readwrite, "a/", "a0")]);
        assert!(perms.allows(Access::Write, b"a/x", b""));
        assert!(perms.allows(Access::Read, b"a/", b"a0"));
        assert!(perms.allows(Access::Read, b"a/b", b"a/c"));
        assert!(!perms.allows(Access::Read, b"a", b"a0"), "starts before");
        assert!(!perms.allows(Access::Read, b"a/", b"b"), "ends after");
        assert!(!perms.allows(Access::Read, b"a/", b"\0"), "unbounded");
        assert!(!perms.allows(Access::Read, b"b", b""));
    }

    #[test]
    fn touching_intervals_join_and_from_key_is_unbounded() {
        let perms = UserPermissions::merge(&[
            perm(PermType::Read, "a", "c"),
            perm(PermType::Read, "c", "e"),
            perm(PermType::Write, "m", "\0"),
        ]);
        assert!(perms.allows(Access::Read, b"b", b"d"));
        assert!(!perms.allows(Access::Read, b"b", b"f"));
        assert!(perms.allows(Access::Write, b"m", b"\0"));
        assert!(perms.allows(Access::Write, b"zzz", b""));
        assert!(!perms.allows(Access::Write, b"l", b"\0"));
        // The whole key space ("\0", "\0") needs an unbounded grant from "\0".
        assert!(!perms.allows(Access::Read, b"\0", b"\0"));
        let all = UserPermissions::merge(&[perm(PermType::Read, "\0", "\0")]);
        assert!(all.allows(Access::Read, b"\0", b"\0"));
    }

    #[test]
    fn gaps_are_not_covered() {
        let perms = UserPermissions::merge(&[
            perm(PermType::Read, "a", "b"),
            perm(PermType::Read, "c", "d"),
        ]);
        assert!(!perms.allows(Access::Read, b"a", b"d"));
        assert!(perms.allows(Access::Read, b"c", b"d"));
    }

    #[test]
    fn permission_ranges_are_validated_as_etcd_does() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(is_valid_permission_range(b"a", b"\0"));
        assert!(!is_valid_permission_range(b"", b""));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"a", b"a"));
    }
}
