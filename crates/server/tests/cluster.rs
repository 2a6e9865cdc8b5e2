//! A three-member cluster of real `raftkv` processes on loopback: the leader
//! is killed with SIGKILL in the middle of a stream of writes and restarted;
//! no acknowledged write is lost, none is applied twice, and all members end
//! with the same state.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{runtime, start_cluster, start_member, Member};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

async fn leader_port(members: &[Member]) -> Option<u16> {
    for member in members.iter().filter(|m| m.server.is_some()) {
        let Ok(mut client) =
            MaintenanceClient::connect(format!("http://127.0.0.1:{}", member.port)).await
        else {
            continue;
        };
        if let Ok(status) = client.status(pb::StatusRequest {}).await {
            let status = status.into_inner();
            if status.header.is_some_and(|h| h.member_id == status.leader) {
                return Some(member.port);
            }
        }
    }
    None
}

/// Writes `key` with an exactly-once request id, trying every member in
/// turn until one acknowledges it (bounded in time). Returns the revision.
async fn write_until_acknowledged(ports: &[u16], key: &str, sequence: u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0usize;
    loop {
        assert!(
            Instant::now() < deadline,
            "write {key} not acknowledged within 30 s"
        );
        let port = ports[attempt % ports.len()];
        attempt += 1;
        let Ok(mut kv) = KvClient::connect(format!("http://127.0.0.1:{port}")).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut request = tonic::Request::new(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: sequence.to_string().into_bytes(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(3));
        request
            .metadata_mut()
            .insert("raftkv-client-id", "777".parse().expect("ascii"));
        request.metadata_mut().insert(
            "raftkv-sequence",
            sequence.to_string().parse().expect("ascii"),
        );
        match kv.put(request).await {
            Ok(resp) => return resp.into_inner().header.map_or(0, |h| h.revision),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn local_state(port: u16) -> (BTreeMap<Vec<u8>, (Vec<u8>, i64)>, i64) {
    let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let resp = kv
        .range(pb::RangeRequest {
            key: b"w".to_vec(),
            range_end: b"x".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let revision = resp.header.map_or(0, |h| h.revision);
    let state = resp
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.version)))
        .collect();
    (state, revision)
}

#[test]
fn killing_the_leader_mid_stream_loses_no_acknowledged_write() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster(base.path(), 3);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    let rt = runtime();
    const WRITES: u64 = 60;
    let mut acknowledged = Vec::new();
    for sequence in 0..WRITES {
        if sequence == WRITES / 2 {
            let leader = rt.block_on(leader_port(&members)).expect("a leader");
            let victim = members
                .iter()
                .position(|m| m.port == leader)
                .expect("leader is a member");
            // SIGKILL by PID, in the middle of the stream.
            drop(members[victim].server.take());
            rt.block_on(async {
                // Writes go on against the survivors while it is down.
                for extra in 0..5 {
                    let key = format!("w-during-{extra}");
                    write_until_acknowledged(&ports, &key, 1000 + extra).await;
                    acknowledged.push(key);
                }
            });
            start_member(&mut members, victim);
        }
        let key = format!("w{sequence:03}");
        rt.block_on(write_until_acknowledged(&ports, &key, sequence));
        acknowledged.push(key);
    }

    // Every member converges on the same state, holding every acknowledged
    // write exactly once (version 1: retries were not applied again).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<_> = ports.iter().map(|&p| rt.block_on(local_state(p))).collect();
        let complete = states
            .iter()
            .all(|(state, _)| state.len() == acknowledged.len());
        let same = states.windows(2).all(|w| w[0] == w[1]);
        if complete && same {
            for key in &acknowledged {
                let (_, version) = &states[0].0[key.as_bytes()];
                assert_eq!(*version, 1, "{key} applied exactly once");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge: {:?}",
            states
                .iter()
                .map(|(s, r)| (s.len(), *r))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for member in &mut members {
        if let Some(server) = member.server.take() {
            assert!(
                server.stop().success(),
                "member {} stops cleanly",
                member.name
            );
        }
    }
}

#[test]
fn a_leader_stopped_with_sigterm_hands_over_leadership_first() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster(base.path(), 3);
    let rt = runtime();
    let leader = rt.block_on(leader_port(&members)).expect("a leader");
    let victim = members
        .iter()
        .position(|m| m.port == leader)
        .expect("leader is a member");
    let server = members[victim].server.take().expect("running");
    assert!(server.stop().success(), "SIGTERM exits 0");
    // The moment the old leader has exited, a new one already leads: no
    // election timeout passed without a leader.
    let new_leader = rt.block_on(leader_port(&members));
    assert!(
        new_leader.is_some_and(|p| p != leader),
        "leadership was handed over before exit"
    );
    for member in &mut members {
        if let Some(server) = member.server.take() {
            assert!(server.stop().success());
        }
    }
}
