//! The seven leader-failure cases of the project's seed, each on a fresh
//! 3-member cluster of real processes (see `raftkv_chaos::cases`). Each
//! prints its transcript; read it with `-- --nocapture`.

use std::path::PathBuf;

use raftkv_chaos::cases::run_case;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_raftkv-chaos-node"))
}

async fn case(n: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let report = match run_case(n, binary()).await {
        Ok(report) => report,
        Err(err) => panic!("case {n} could not be staged: {err}"),
    };
    println!("{report}");
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failure_case_1() {
    case(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failure_case_2() {
    case(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failure_case_3() {
    case(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failure_case_4() {
    case(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failure_case_5() {
    case(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failure_case_6() {
    case(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failure_case_7() {
    case(7).await;
}
