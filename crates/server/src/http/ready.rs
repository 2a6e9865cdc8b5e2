//! Holding client requests until this member's name and client URLs are in
//! the replicated member list.
//!
//! As etcd's, a member whose record lacks them (a fresh member, or one whose
//! flags changed them) serves no gRPC or gateway request until its publish
//! is applied: `etcdctl --cluster` commands start with a linearizable
//! MemberList and skip members listed without client URLs. The requests
//! wait, as on etcd, where the client port accepts connections but answers
//! only once the member is ready. Unlike etcd, `/health`, `/version` and
//! `/metrics` answer meanwhile, so a member that finds no leader says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Notify;

/// Closed until this member's attributes are published, then open for good.
#[derive(Debug, Default)]
pub struct ClientGate {
    open: AtomicBool,
    opened: Notify,
}

impl ClientGate {
    /// Lets every held and later request through.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.opened.notify_waiters();
    }

    /// Whether requests go through.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Returns once the gate is open.
    pub async fn wait_open(&self) {
        loop {
            // Registered before the check, so an `open` in between wakes it.
            let opened = self.opened.notified();
            if self.is_open() {
                return;
            }
            opened.await;
        }
    }
}

/// Middleware: holds a request until the gate opens.
pub async fn hold_until_open(
    State(gate): State<Arc<ClientGate>>,
    request: Request,
    next: Next,
) -> Response {
    gate.wait_open().await;
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_pass_once_opened_and_later_callers_at_once() {
        let gate = Arc::new(ClientGate::default());
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.open();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter passes once opened")
            .expect("the waiter task");
        tokio::time::timeout(std::time::Duration::from_secs(5), gate.wait_open())
            .await
            .expect("an open gate does not hold");
    }
}
