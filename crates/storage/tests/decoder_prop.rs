//! Property tests of the record decoder: it never panics on any bytes, valid
//! records round-trip, and a mutated record never decodes to different data.

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_raft::{Entry, EntryKind, HardState};
use raftkv_storage::{decode_record, encode_record, Record};

fn any_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (any::<u64>(), any::<u64>())
            .prop_map(|(seq, first_index)| Record::SegmentHeader { seq, first_index }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(term, index, conf, data)| Record::Entry(Entry {
                term,
                index,
                kind: if conf {
                    EntryKind::ConfChange
                } else {
                    EntryKind::Normal
                },
                data: Bytes::from(data),
            })),
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(term, vote, commit)| Record::HardState(HardState { term, vote, commit })),
        (any::<u64>(), any::<u64>()).prop_map(|(index, term)| Record::Snapshot { index, term }),
        any::<u64>().prop_map(|index| Record::Truncate { index }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok((_, used)) = decode_record(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn valid_records_round_trip(record in any_record(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut bytes = Vec::new();
        let len = encode_record(&record, &mut bytes).unwrap();
        bytes.extend_from_slice(&tail);
        let (decoded, used) = decode_record(&bytes).unwrap();
        prop_assert_eq!(decoded, record);
        prop_assert_eq!(used, len);
    }

    #[test]
    fn mutated_records_never_decode_to_other_data(
        record in any_record(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        encode_record(&record, &mut bytes).unwrap();
        let original = bytes.clone();
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok((decoded, _)) = decode_record(&bytes) {
            // A mutation may only decode if it changed nothing; forging a
            // matching CRC32C by chance has odds of 2^-32 per case.
            prop_assert_eq!(&bytes[..], &original[..]);
            prop_assert_eq!(decoded, record);
        }
    }
}
