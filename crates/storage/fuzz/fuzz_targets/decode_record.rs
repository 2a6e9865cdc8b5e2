//! Fuzzes the WAL record decoder: it must never panic, must not claim more
//! bytes than it was given, and whatever it decodes must re-encode to the
//! very bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftkv_storage::{decode_record, encode_record};

fuzz_target!(|data: &[u8]| {
    if let Ok((record, used)) = decode_record(data) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        let len = encode_record(&record, &mut again).expect("a decoded record re-encodes");
        assert_eq!(len, used);
        assert_eq!(&again[..], &data[..used]);
    }
});
