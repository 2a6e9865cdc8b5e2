//! A three-member cluster of real `raftkv` processes on loopback: the leader
//! is killed with SIGKILL in the middle of a stream of writes and restarted;
//! no acknowledged write is lost, none is applied twice, and all members end
//! with the same state. Members are also replaced (one added as a learner,
//! promoted, the leader removed) while writes go on.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    cluster_flags, free_port, runtime, spawn, start_cluster, start_cluster_with, start_member,
    wait_ready, Member,
};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// Stops every member still running, each with SIGTERM and exit 0.
fn stop_all(members: &mut [Member]) {
    for member in members {
        if let Some(server) = member.server.take() {
            assert!(server.stop().success());
        }
    }
}

/// The client port of a member other than the one on `leader`.
fn a_follower(members: &[Member], leader: u16) -> u16 {
    members
        .iter()
        .map(|m| m.port)
        .find(|&p| p != leader)
        .expect("a follower")
}

/// Takes the running member on `port` out of `members`, to stop it.
fn take_member(members: &mut [Member], port: u16) -> common::Server {
    let at = members
        .iter()
        .position(|m| m.port == port)
        .expect("a member on that port");
    members[at].server.take().expect("running")
}

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
    local_state_of(port, b"w", b"x").await
}

/// The keys in [`start`, `end`) a member holds (serializable read), with
/// their values and versions, and its revision.
async fn local_state_of(
    port: u16,
    start: &[u8],
    end: &[u8],
) -> (BTreeMap<Vec<u8>, (Vec<u8>, i64)>, i64) {
    let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let resp = kv
        .range(pb::RangeRequest {
            key: start.to_vec(),
            range_end: end.to_vec(),
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
                // Sequence numbers must increase per client: these fall
                // between the stream's (which go up by 10).
                for extra in 0..5 {
                    let key = format!("w-during-{extra}");
                    write_until_acknowledged(&ports, &key, sequence * 10 - 5 + extra).await;
                    acknowledged.push(key);
                }
            });
            start_member(&mut members, victim);
        }
        let key = format!("w{sequence:03}");
        rt.block_on(write_until_acknowledged(&ports, &key, sequence * 10));
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
    let server = take_member(&mut members, leader);
    assert!(server.stop().success(), "SIGTERM exits 0");
    // The moment the old leader has exited, a new one already leads: no
    // election timeout passed without a leader.
    let new_leader = rt.block_on(leader_port(&members));
    assert!(
        new_leader.is_some_and(|p| p != leader),
        "leadership was handed over before exit"
    );
    stop_all(&mut members);
}

async fn member_list(port: u16) -> Vec<pb::Member> {
    let mut client = ClusterClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    client
        .member_list(pb::MemberListRequest { linearizable: true })
        .await
        .expect("member list")
        .into_inner()
        .members
}

/// Writes keys `r0000`, `r0001`, ... one after another through whichever
/// of `ports` answers, until `stop` is set (at most `max` writes); returns
/// the keys acknowledged.
fn spawn_writer(
    ports: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: u64,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let rt = runtime();
        let mut acknowledged = Vec::new();
        for sequence in 0..max {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let current = ports.lock().expect("ports").clone();
            let key = format!("r{sequence:04}");
            rt.block_on(write_until_acknowledged(&current, &key, 5000 + sequence));
            acknowledged.push(key);
        }
        acknowledged
    })
}

#[test]
fn members_are_added_promoted_and_removed_while_writes_continue() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let base = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster(base.path(), 3);
    let rt = runtime();

    // A fresh member serves clients only once its name and client URL are
    // in the member list, as etcd's: so as soon as all serve, every one of
    // them lists every founder's URL (`etcdctl --cluster` depends on it).
    for asked in &members {
        let listed = rt.block_on(member_list(asked.port));
        assert_eq!(listed.len(), 3, "{} lists {listed:?}", asked.name);
        for member in &members {
            let record = listed
                .iter()
                .find(|m| m.name == member.name)
                .unwrap_or_else(|| {
                    panic!("{} not listed by {}: {listed:?}", member.name, asked.name)
                });
            assert_eq!(
                record.client_ur_ls,
                vec![format!("http://127.0.0.1:{}", member.port)]
            );
            assert!(!record.is_learner);
        }
    }

    let ports = Arc::new(Mutex::new(
        members.iter().map(|m| m.port).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(ports.clone(), stop.clone(), 5000);

    // Add a fourth member as a learner and start it to join.
    let newcomer_port = free_port();
    members.push(Member {
        name: "m3".into(),
        port: newcomer_port,
        dir: base.path().join("m3"),
        server: None,
        extra: Vec::new(),
    });
    let newcomer_peer = format!("http://127.0.0.1:{}", newcomer_port + 1);
    let added = rt.block_on(async {
        let mut client = ClusterClient::connect(format!("http://127.0.0.1:{}", members[0].port))
            .await
            .expect("connect");
        client
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec![newcomer_peer.clone()],
                is_learner: true,
            })
            .await
            .expect("member add")
            .into_inner()
    });
    let newcomer_id = added.member.as_ref().expect("the new member").id;
    assert_eq!(added.members.len(), 4);
    {
        let flags = cluster_flags(&members, "m3");
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend(["--initial-cluster-state", "existing"]);
        let member = &mut members[3];
        member.server = Some(spawn(&member.dir, member.port, &args));
    }
    assert!(wait_ready(newcomer_port), "the newcomer serves");

    // A second learner is over --max-learners (1 by default).
    let refused = rt.block_on(async {
        let mut client = ClusterClient::connect(format!("http://127.0.0.1:{}", members[1].port))
            .await
            .expect("connect");
        client
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:9".into()],
                is_learner: true,
            })
            .await
            .expect_err("too many learners")
    });
    assert_eq!(
        refused.message(),
        "etcdserver: too many learner members in cluster"
    );

    // Promote it once it has caught up (asked of a follower, which hands
    // the request to the leader).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = rt.block_on(async {
            let mut client =
                ClusterClient::connect(format!("http://127.0.0.1:{}", members[2].port))
                    .await
                    .expect("connect");
            client
                .member_promote(pb::MemberPromoteRequest { id: newcomer_id })
                .await
        });
        match result {
            Ok(_) => break,
            Err(status) => {
                assert!(Instant::now() < deadline, "promotion failed: {status:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    ports.lock().expect("ports").push(newcomer_port);

    // Remove the leader; it stops by itself once it learns.
    let leader = rt.block_on(leader_port(&members)).expect("a leader");
    let victim = members
        .iter()
        .position(|m| m.port == leader)
        .expect("leader is a member");
    let victim_id = rt.block_on(async {
        let mut client = MaintenanceClient::connect(format!("http://127.0.0.1:{leader}"))
            .await
            .expect("connect");
        client
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .leader
    });
    ports.lock().expect("ports").retain(|&p| p != leader);
    let survivor = members[(victim + 1) % 3].port;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = rt.block_on(async {
            let mut client = ClusterClient::connect(format!("http://127.0.0.1:{survivor}"))
                .await
                .expect("connect");
            client
                .member_remove(pb::MemberRemoveRequest { id: victim_id })
                .await
        });
        match result {
            Ok(_) => break,
            // Already applied by an earlier attempt whose answer was lost.
            Err(status) if status.code() == tonic::Code::NotFound => break,
            Err(status) => {
                assert!(Instant::now() < deadline, "removal failed: {status:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let mut removed = members[victim].server.take().expect("running");
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Ok(Some(status)) = removed.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the removed member did not stop by itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "a removed member exits cleanly");

    // Let writes go on in the new configuration for a moment, then stop.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.join().expect("writer");
    assert!(
        acknowledged.len() > 10,
        "writes went on: {}",
        acknowledged.len()
    );

    let remaining: Vec<u16> = ports.lock().expect("ports").clone();
    assert_eq!(remaining.len(), 3);
    // The newcomer publishes its name once it runs (a publish caught in the
    // leader's removal is retried).
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = rt.block_on(member_list(remaining[0]));
        let named = listed.iter().any(|m| m.id == newcomer_id && m.name == "m3");
        if named || Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|m| m.id != victim_id && !m.is_learner));
    let newcomer = listed
        .iter()
        .find(|m| m.id == newcomer_id)
        .expect("the newcomer is listed");
    assert_eq!(newcomer.name, "m3", "{listed:?}");
    assert_eq!(newcomer.peer_ur_ls, vec![newcomer_peer]);

    // Every acknowledged write is on every remaining member, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<_> = remaining
            .iter()
            .map(|&p| rt.block_on(local_state_of(p, b"r", b"s")))
            .collect();
        let complete = states.iter().all(|(state, _)| {
            acknowledged
                .iter()
                .all(|k| state.contains_key(k.as_bytes()))
        });
        let same = states.windows(2).all(|w| w[0] == w[1]);
        if complete && same {
            for key in &acknowledged {
                assert_eq!(states[0].0[key.as_bytes()].1, 1, "{key} applied once");
            }
            break;
        }
        assert!(Instant::now() < deadline, "members did not converge");
        std::thread::sleep(Duration::from_millis(100));
    }
    for member in &mut members {
        if let Some(server) = member.server.take() {
            assert!(server.stop().success(), "{} stops cleanly", member.name);
        }
    }
}

async fn time_to_live(port: u16, id: i64) -> pb::LeaseTimeToLiveResponse {
    let mut client = LeaseClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    client
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("time to live")
        .into_inner()
}

#[test]
fn followers_forward_keep_alives_and_a_new_leader_resumes_lease_clocks_from_checkpoints() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster_with(
        base.path(),
        3,
        &["--experimental-lease-checkpoint-interval", "1s"],
    );
    let rt = runtime();
    let leader = rt.block_on(leader_port(&members)).expect("a leader");
    let follower = a_follower(&members, leader);

    // Grant, attach a key and keep alive, all through a follower.
    let id = rt.block_on(async {
        let url = format!("http://127.0.0.1:{follower}");
        let mut leases = LeaseClient::connect(url.clone()).await.expect("connect");
        let id = leases
            .lease_grant(pb::LeaseGrantRequest { ttl: 20, id: 0 })
            .await
            .expect("grant")
            .into_inner()
            .id;
        let mut kv = KvClient::connect(url).await.expect("connect");
        kv.put(pb::PutRequest {
            key: b"leased".to_vec(),
            value: b"v".to_vec(),
            lease: id,
            ..Default::default()
        })
        .await
        .expect("put");
        let mut answers = leases
            .lease_keep_alive(tokio_stream::iter(vec![pb::LeaseKeepAliveRequest { id }]))
            .await
            .expect("keep-alive through a follower")
            .into_inner();
        let answer = answers.message().await.expect("answer").expect("one");
        assert_eq!((answer.id, answer.ttl), (id, 20));
        id
    });
    let ttl = rt.block_on(time_to_live(follower, id));
    assert_eq!(ttl.granted_ttl, 20);
    assert!(ttl.ttl > 15 && ttl.ttl <= 20, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"leased".to_vec()]);

    // Let a few checkpoints pass, then hand leadership over.
    std::thread::sleep(Duration::from_millis(4500));
    let server = take_member(&mut members, leader);
    assert!(server.stop().success());
    let new_leader = rt.block_on(leader_port(&members)).expect("a new leader");
    let resumed = rt.block_on(time_to_live(new_leader, id));
    // Restarted from the full TTL (as etcd 3.4 does) it would show 20.
    if !(resumed.ttl > 0 && resumed.ttl <= 17) {
        let logs: Vec<String> = members
            .iter()
            .map(|m| {
                std::fs::read_to_string(m.dir.join(format!("raftkv-{}.log", m.port)))
                    .unwrap_or_default()
            })
            .collect();
        panic!(
            "the new leader did not resume from a checkpoint: {resumed:?}\n{}",
            logs.join("\n-----\n")
        );
    }
    stop_all(&mut members);
}

/// A client's keep-alive stream on a follower: many renewals in a row are
/// answered (the follower holds one stream to the leader for them), and the
/// same stream goes on being answered after the leader is stopped and
/// another elected.
#[test]
fn a_keep_alive_stream_on_a_follower_is_answered_throughout_and_across_a_leader_change() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster(base.path(), 3);
    let rt = runtime();
    let leader = rt.block_on(leader_port(&members)).expect("a leader");
    // A follower that stays one: the leader is stopped below, so the
    // survivor's stream is handed to the new leader (or answered here).
    let follower = a_follower(&members, leader);
    rt.block_on(async {
        let mut leases = LeaseClient::connect(format!("http://127.0.0.1:{follower}"))
            .await
            .expect("connect");
        let mut ids = Vec::new();
        for _ in 0..5 {
            let grant = pb::LeaseGrantRequest { ttl: 30, id: 0 };
            ids.push(
                leases
                    .lease_grant(grant)
                    .await
                    .expect("grant")
                    .into_inner()
                    .id,
            );
        }
        let (requests, outgoing) = tokio::sync::mpsc::channel(1);
        let mut answers = leases
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
            .expect("keep-alive through a follower")
            .into_inner();
        let renew = |id: i64| {
            let requests = requests.clone();
            async move {
                requests
                    .send(pb::LeaseKeepAliveRequest { id })
                    .await
                    .expect("request sent");
            }
        };
        for round in 0..2_000 {
            let id = ids[round % ids.len()];
            renew(id).await;
            let answer = answers.message().await.expect("answer").expect("one");
            assert_eq!((answer.id, answer.ttl), (id, 30), "renewal {round}");
        }

        let server = take_member(&mut members, leader);
        assert!(server.stop().success());
        let new_leader = leader_port(&members).await.expect("a new leader");
        assert_ne!(new_leader, leader);
        for &id in &ids {
            renew(id).await;
            let answer = answers
                .message()
                .await
                .expect("answered after the leader change")
                .expect("one");
            assert_eq!((answer.id, answer.ttl), (id, 30));
        }
    });
    stop_all(&mut members);
}

/// A put with the exactly-once request id (client 4343, `sequence`).
fn put_with_id(key: &str, value: &str, sequence: u64) -> tonic::Request<pb::PutRequest> {
    let mut request = tonic::Request::new(pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("raftkv-client-id", "4343".parse().expect("ascii"));
    request.metadata_mut().insert(
        "raftkv-sequence",
        sequence.to_string().parse().expect("ascii"),
    );
    request.set_timeout(Duration::from_secs(3));
    request
}

/// The seed's cases 3 and 6: the leader fails after the write is committed
/// but before the client has its answer; the client retries on another
/// member with the same request id and gets the first outcome, and the key
/// was written once.
#[test]
fn a_write_retried_after_the_leader_died_before_answering_is_applied_once() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster(base.path(), 3);
    let rt = runtime();
    let leader = rt.block_on(leader_port(&members)).expect("a leader");
    let victim = members
        .iter()
        .position(|m| m.port == leader)
        .expect("leader is a member");
    let follower = members[(victim + 1) % 3].port;

    // The write reaches the leader; its answer is never read.
    let in_flight = std::thread::spawn(move || {
        runtime().block_on(async {
            let mut kv = KvClient::connect(format!("http://127.0.0.1:{leader}"))
                .await
                .expect("connect");
            drop(kv.put(put_with_id("once", "first", 1)).await);
        })
    });
    // Committed: a follower has applied it. Then the leader dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    let committed = loop {
        let (state, _) = rt.block_on(local_state_of(follower, b"once", b"oncf"));
        if let Some(entry) = state.get(b"once".as_slice()) {
            break entry.clone();
        }
        assert!(Instant::now() < deadline, "the write was not committed");
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(members[victim].server.take());
    let _ = in_flight.join();
    assert_eq!(committed, (b"first".to_vec(), 1));

    // The retry, same id, through a survivor, once a new leader is there.
    let survivors: Vec<u16> = members
        .iter()
        .filter(|m| m.server.is_some())
        .map(|m| m.port)
        .collect();
    let (retry_revision, mod_revision) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let retry = loop {
            let port = survivors[0];
            let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .expect("connect");
            match kv.put(put_with_id("once", "second", 1)).await {
                Ok(answer) => break answer.into_inner(),
                Err(status) => {
                    assert!(Instant::now() < deadline, "retry failed: {status:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{}", survivors[1]))
            .await
            .expect("connect");
        let got = kv
            .range(pb::RangeRequest {
                key: b"once".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(got.kvs[0].version, 1, "applied once, not twice");
        assert_eq!(got.kvs[0].value, b"first", "the retry was not applied");
        (
            retry.header.map_or(0, |h| h.revision),
            got.kvs[0].mod_revision,
        )
    });
    assert_eq!(
        retry_revision, mod_revision,
        "the retry returns the first outcome"
    );

    // The old leader comes back and agrees.
    start_member(&mut members, victim);
    assert!(wait_ready(members[victim].port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (state, _) = rt.block_on(local_state_of(members[victim].port, b"once", b"oncf"));
        if state.get(b"once".as_slice()) == Some(&(b"first".to_vec(), 1)) {
            break;
        }
        assert!(Instant::now() < deadline, "the old leader did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_all(&mut members);
}

/// `--request-outcome-ttl` bounds how long a retry is recognised: within it
/// a retry gets the first outcome, after it the same request id is a new
/// write. The leader forgets outcomes through the log, so a restarted
/// member agrees.
#[test]
fn outcomes_are_forgotten_after_the_request_outcome_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = common::start(dir.path(), port, &["--request-outcome-ttl", "1s"]);
    let rt = runtime();
    let put = |sequence: u64| {
        rt.block_on(async {
            let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .expect("connect");
            kv.put(put_with_id("ttl", "v", sequence))
                .await
                .expect("put")
                .into_inner()
                .header
                .expect("header")
                .revision
        })
    };
    let first = put(1);
    assert_eq!(
        put(1),
        first,
        "a retry within the TTL is answered, not applied"
    );
    // The TTL, then at most a check interval (a quarter of it), then margin.
    std::thread::sleep(Duration::from_millis(2500));
    let again = put(1);
    assert!(
        again > first,
        "after the TTL the same request id is applied anew ({again} vs {first})"
    );
    server.stop();
}
