//! etcd's key-range conventions, decoded once into a [`KeyRange`].
//!
//! - `range_end` empty: the single key `key`;
//! - `range_end == "\0"`: every key `>= key` (so `key == "\0"` too: every key);
//! - otherwise the half-open interval `[key, range_end)`, empty when `range_end <= key`.

/// A decoded key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key.
    Single(Vec<u8>),
    /// Every key `>= start`.
    From(Vec<u8>),
    /// Keys in `[start, end)`; `start < end` always holds.
    Between(Vec<u8>, Vec<u8>),
    /// No key at all (`range_end <= key`).
    Empty,
}

impl KeyRange {
    /// Decodes etcd's `(key, range_end)` pair.
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Single(key.to_vec())
        } else if range_end == [0] {
            KeyRange::From(key.to_vec())
        } else if range_end > key {
            KeyRange::Between(key.to_vec(), range_end.to_vec())
        } else {
            KeyRange::Empty
        }
    }

    /// True when `k` lies in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(s) => s.as_slice() == k,
            KeyRange::From(s) => k >= s.as_slice(),
            KeyRange::Between(s, e) => k >= s.as_slice() && k < e.as_slice(),
            KeyRange::Empty => false,
        }
    }

    /// True when the two ranges share a key.
    pub fn intersects(&self, other: &KeyRange) -> bool {
        let (Some((a0, a1)), Some((b0, b1))) = (self.bounds(), other.bounds()) else {
            return false;
        };
        // [a0, a1) and [b0, b1) with None as +infinity.
        let a_before_b_end = b1.as_ref().is_none_or(|e| a0 < *e);
        let b_before_a_end = a1.as_ref().is_none_or(|e| b0 < *e);
        a_before_b_end && b_before_a_end
    }

    /// Half-open bounds `[start, end)`, `end == None` meaning unbounded; `None` when empty.
    /// A single key `k` is `[k, k + "\0")`.
    fn bounds(&self) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        match self {
            KeyRange::Single(s) => {
                let mut e = s.clone();
                e.push(0);
                Some((s.clone(), Some(e)))
            }
            KeyRange::From(s) => Some((s.clone(), None)),
            KeyRange::Between(s, e) => Some((s.clone(), Some(e.clone()))),
            KeyRange::Empty => None,
        }
    }
}

/// The `range_end` that makes `(prefix, range_end)` a prefix scan, like etcd's `GetPrefixRangeEnd`.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_range_end_is_single_key() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a".to_vec()));
    }

    #[test]
    fn nul_range_end_is_everything_from_key() {
        let r = KeyRange::new(b"\0", b"\0");
        assert!(r.contains(b"\0") && r.contains(b"zzz"));
        let r = KeyRange::new(b"b", b"\0");
        assert!(!r.contains(b"a") && r.contains(b"b") && r.contains(b"c"));
    }

    #[test]
    fn inverted_range_is_empty() {
        assert_eq!(KeyRange::new(b"b", b"a"), KeyRange::Empty);
    }

    #[test]
    fn prefix_end_increments_last_byte_below_ff() {
        assert_eq!(prefix_range_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn intersection_of_point_and_interval() {
        let p = KeyRange::new(b"b", b"");
        assert!(p.intersects(&KeyRange::new(b"a", b"c")));
        assert!(!p.intersects(&KeyRange::new(b"c", b"d")));
        assert!(p.intersects(&KeyRange::new(b"a", b"\0")));
        assert!(!p.intersects(&KeyRange::new(b"b\0", b"")));
    }
}
