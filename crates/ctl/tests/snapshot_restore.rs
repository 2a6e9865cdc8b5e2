//! `raftkvctl snapshot restore`: a file saved from a running member becomes
//! the data directory of a new cluster's member, which serves the same keys
//! at the same revisions; a damaged file or an existing directory is refused
//! and leaves nothing behind.

mod common;

use common::{free_port, run, runtime, TestServer, Tool};
use raftkv_proto::etcdserverpb as pb;

fn raftkvctl(endpoint: &str, args: &[&str]) -> common::Run {
    run(Tool::Raftkvctl, endpoint, args, None, None)
}

#[test]
fn a_saved_snapshot_restores_into_a_new_member_that_serves_it() {
    let source = TestServer::start();
    let endpoint = source.endpoint();
    for (key, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
        assert_eq!(raftkvctl(&endpoint, &["put", key, value]).stdout, "OK\n");
    }
    let files = tempfile::tempdir().expect("tempdir");
    let snapshot = files.path().join("snap.db");
    let snapshot = snapshot.to_str().expect("utf-8 path");
    let saved = raftkvctl(&endpoint, &["snapshot", "save", snapshot]);
    assert_eq!(saved.code, 0, "{saved:?}");
    drop(source);

    let parent = tempfile::tempdir().expect("tempdir");
    let data_dir = parent.path().join("restored");
    let data_dir_arg = data_dir.to_str().expect("utf-8 path").to_string();
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let initial_cluster = format!("r={peer_url}");
    let identity = [
        "--name",
        "r",
        "--initial-cluster",
        &initial_cluster,
        "--initial-cluster-token",
        "restored-token",
        "--initial-advertise-peer-urls",
        &peer_url,
    ];
    let restore = |file: &str, data_dir: &str| {
        let mut args = vec!["snapshot", "restore", file, "--data-dir", data_dir];
        args.extend(identity);
        // No server is dialed: the endpoint does not exist.
        raftkvctl("127.0.0.1:1", &args)
    };

    // A damaged copy is refused and creates nothing.
    let damaged = files.path().join("damaged.db");
    let mut bytes = std::fs::read(snapshot).expect("read the snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, &bytes).expect("write the damaged copy");
    let refused = restore(damaged.to_str().expect("utf-8 path"), &data_dir_arg);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("SHA-256 mismatch"), "{refused:?}");
    assert!(!data_dir.exists());

    let missing = raftkvctl("127.0.0.1:1", &["snapshot", "restore"]);
    assert_eq!(missing.code, 128, "{missing:?}");
    assert_eq!(
        missing.stderr,
        "Error: snapshot restore requires exactly one argument\n"
    );

    let restored = restore(snapshot, &data_dir_arg);
    assert_eq!(restored.code, 0, "{restored:?}");
    assert!(
        restored.stdout.starts_with(&format!(
            "Restored snapshot {snapshot} into {data_dir_arg}: revision 4, compacted at 0, member "
        )),
        "{restored:?}"
    );
    // Restoring never overwrites a directory.
    let again = restore(snapshot, &data_dir_arg);
    assert_eq!(again.code, 1, "{again:?}");
    assert_eq!(
        again.stderr,
        format!("Error: data-dir {data_dir_arg} exists\n")
    );

    // A member started with the same flags serves the restored keys.
    let port = free_port();
    let client_url = format!("http://127.0.0.1:{port}");
    let mut flags = vec![
        "--data-dir",
        &data_dir_arg,
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
    ];
    flags.extend(identity);
    let member = TestServer::start_with_flags(parent, port, &flags);
    let found = runtime()
        .block_on(member.client().range(pb::RangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            ..Default::default()
        }))
        .expect("range on the restored member");
    let kvs: Vec<(Vec<u8>, Vec<u8>, i64)> = found
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect();
    assert_eq!(
        kvs,
        vec![
            (b"a".to_vec(), b"3".to_vec(), 4),
            (b"b".to_vec(), b"2".to_vec(), 3)
        ]
    );
    assert!(found.header.expect("header").revision >= 4);
    assert_eq!(
        raftkvctl(
            &member.endpoint(),
            &["get", "a", "--rev", "2", "--print-value-only"]
        )
        .stdout,
        "1\n",
        "history is kept"
    );
    // The new cluster is the one its flags describe: the source's member
    // records are not carried over.
    let members = raftkvctl(&member.endpoint(), &["member", "list"]);
    assert_eq!(members.code, 0, "{members:?}");
    let listed: Vec<&str> = members.stdout.lines().collect();
    assert_eq!(listed.len(), 1, "{members:?}");
    assert!(
        listed[0].contains(&format!(", started, r, {peer_url}, {client_url}, false")),
        "{members:?}"
    );
}
