//! Entries committed per second through a 3-node in-memory cluster.
//!
//! Everything but the Raft core is free here: messages move through a queue
//! and persisting costs nothing, so the figure is the ceiling the core puts
//! on the server. Proposals arrive in batches, as a server's proposal queue
//! delivers them between two readies.

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkv_raft::{ConfChange, Config, EntryKind, Message, RawNode};

struct InMemoryCluster {
    nodes: Vec<RawNode>,
    queue: VecDeque<Message>,
    committed_at_leader: u64,
}

impl InMemoryCluster {
    fn new() -> Self {
        let nodes = (1..=3)
            .map(|id| {
                let mut config = Config::new(id);
                config.max_inflight_msgs = 1024;
                RawNode::bootstrap(config, &[1, 2, 3]).expect("valid config")
            })
            .collect();
        let mut cluster = Self {
            nodes,
            queue: VecDeque::new(),
            committed_at_leader: 0,
        };
        cluster.run();
        cluster.nodes[0].campaign();
        cluster.run();
        cluster
    }

    fn handle_readies(&mut self) -> bool {
        let mut any = false;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            while node.has_ready() {
                any = true;
                let ready = node.ready();
                self.queue.extend(ready.messages);
                self.queue.extend(ready.persisted_messages);
                for entry in &ready.committed_entries {
                    if entry.kind == EntryKind::ConfChange {
                        let cc = ConfChange::decode(&entry.data).expect("valid conf change");
                        node.apply_conf_change(&cc).expect("valid conf change");
                    } else if i == 0 && !entry.data.is_empty() {
                        self.committed_at_leader += 1;
                    }
                }
                node.advance();
            }
        }
        any
    }

    fn run(&mut self) {
        loop {
            let progressed = self.handle_readies();
            if self.queue.is_empty() && !progressed {
                return;
            }
            while let Some(msg) = self.queue.pop_front() {
                let to = (msg.to - 1) as usize;
                let _ = self.nodes[to].step(msg);
            }
        }
    }
}

fn commit_throughput(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'v'; 256]);
    let mut group = c.benchmark_group("commit_3_nodes");
    for batch in [1u64, 64, 1024] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let mut cluster = InMemoryCluster::new();
            b.iter(|| {
                let before = cluster.committed_at_leader;
                let payloads = (0..batch).map(|_| payload.clone());
                cluster.nodes[0]
                    .propose_batch(payloads)
                    .expect("leader accepts");
                cluster.run();
                assert_eq!(cluster.committed_at_leader - before, batch);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
