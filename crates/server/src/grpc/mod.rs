//! etcd's v3 gRPC services.
//!
//! - [`kv`] serves Range, Put, DeleteRange, Txn and Compact.
//! - [`maintenance`] serves Status, Alarm, Defragment, Hash, HashKV, Snapshot
//!   and MoveLeader (Downgrade answers Unimplemented).
//! - [`cluster`] serves MemberList, MemberAdd, MemberRemove, MemberUpdate
//!   and MemberPromote.
//! - [`watch`] serves Watch.
//! - [`lease`] serves Lease; expiry runs on the leader.
//!
//! - [`auth`] serves Auth: authentication, users, roles, permissions.
//!
//! - [`counting`] counts calls per method and code for `/metrics`.
//!
//! Lock and Election are not served yet; clients calling them get gRPC's
//! Unimplemented.
//!
//! [`Services`] holds one instance of each service, shared by gRPC and the
//! JSON gateway, so both run the same code.

pub mod auth;
pub mod cluster;
pub mod counting;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use raftkv_mvcc::Store;
use raftkv_proto::etcdserverpb::auth_server::AuthServer;
use raftkv_proto::etcdserverpb::cluster_server::ClusterServer;
use raftkv_proto::etcdserverpb::kv_server::KvServer;
use raftkv_proto::etcdserverpb::lease_server::LeaseServer;
use raftkv_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use raftkv_proto::etcdserverpb::watch_server::WatchServer;
use raftkv_proto::etcdserverpb::ResponseHeader;
use tonic::server::NamedService;

use crate::lessor::Lessor;
use crate::node::NodeHandle;
use crate::replicated::Outcome;
use crate::watch::WatchHub;

/// The etcd services a member serves (besides `grpc.health.v1.Health`).
pub const SERVED: [&str; 6] = [
    <KvServer<kv::KvService> as NamedService>::NAME,
    <WatchServer<watch::WatchService> as NamedService>::NAME,
    <LeaseServer<lease::LeaseService> as NamedService>::NAME,
    <ClusterServer<cluster::ClusterService> as NamedService>::NAME,
    <MaintenanceServer<maintenance::MaintenanceService> as NamedService>::NAME,
    <AuthServer<auth::AuthService> as NamedService>::NAME,
];

/// One instance of each service.
#[derive(Clone)]
pub struct Services {
    /// KV.
    pub kv: Arc<kv::KvService>,
    /// Watch.
    pub watch: Arc<watch::WatchService>,
    /// Lease.
    pub lease: Arc<lease::LeaseService>,
    /// Cluster.
    pub cluster: Arc<cluster::ClusterService>,
    /// Maintenance.
    pub maintenance: Arc<maintenance::MaintenanceService>,
    /// Auth.
    pub auth: Arc<auth::AuthService>,
}

impl Services {
    /// The services over `ctx`; watches are fed by `hub`, leases kept by
    /// `lessor` and granted for at least `min_lease_ttl` seconds.
    pub fn new(
        ctx: ServiceContext,
        hub: WatchHub,
        lessor: Arc<Lessor>,
        min_lease_ttl: i64,
    ) -> Self {
        Self {
            kv: Arc::new(kv::KvService::new(ctx.clone())),
            watch: Arc::new(watch::WatchService::new(ctx.clone(), hub)),
            lease: Arc::new(lease::LeaseService::new(ctx.clone(), lessor, min_lease_ttl)),
            cluster: Arc::new(cluster::ClusterService::new(ctx.clone())),
            maintenance: Arc::new(maintenance::MaintenanceService::new(ctx.clone())),
            auth: Arc::new(auth::AuthService::new(ctx)),
        }
    }

    /// The gRPC routes of every service and of the standard health service
    /// (reporting SERVING, as etcd does); KV requests may be up to
    /// `max_message_bytes` long.
    pub async fn routes(&self, max_message_bytes: usize) -> tonic::service::Routes {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tonic::service::Routes::new(health_service)
            .add_service(
                KvServer::from_arc(self.kv.clone()).max_decoding_message_size(max_message_bytes),
            )
            .add_service(MaintenanceServer::from_arc(self.maintenance.clone()))
            .add_service(WatchServer::from_arc(self.watch.clone()))
            .add_service(LeaseServer::from_arc(self.lease.clone()))
            .add_service(ClusterServer::from_arc(self.cluster.clone()))
            .add_service(AuthServer::from_arc(self.auth.clone()))
    }
}

/// What every service needs: the node, the store, the ids and the limits.
#[derive(Clone)]
pub struct ServiceContext {
    /// The node driver.
    pub node: NodeHandle<Outcome>,
    /// The applied state, for reads.
    pub store: Arc<Store>,
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: u64,
    /// Most operations at one level of a txn.
    pub max_txn_ops: u32,
    /// How long a request may wait for the cluster.
    pub request_timeout: Duration,
    /// The members as last applied.
    pub members: Arc<crate::members::MemberDirectory>,
    /// The cluster token, salt of new member ids.
    pub cluster_token: String,
    /// Most learners MemberAdd lets in.
    pub max_learners: u32,
    /// A connection to the leader, for the requests only the leader can
    /// answer (lease keep-alives, time-to-live, promotions).
    pub leader_link: Arc<std::sync::Mutex<Option<(u64, tonic::transport::Channel)>>>,
    /// This member's reading of the cluster clock, stamped on proposals.
    pub cluster_clock: Arc<crate::outcomes::ClusterClock>,
    /// Opens connections to peers (the leader, for hand-overs).
    pub peer_dialer: crate::peer::dial::PeerDialer,
    /// Store file size at which writes are refused and NOSPACE raised.
    pub quota_backend_bytes: u64,
    /// How often watchers created with `progress_notify` hear progress.
    pub watch_progress_interval: Duration,
    /// Bytes of responses a watch stream may hold for its client.
    pub watch_stream_buffer_bytes: u32,
    /// This member's name and client URLs, as its flags give them (the
    /// replicated record has them only once this member has published).
    pub own_attributes: (String, Vec<String>),
    /// Holds client requests until this member's publish is applied.
    pub client_gate: Arc<crate::http::ready::ClientGate>,
    /// The auth store as applied, and this member's tokens.
    pub auth: Arc<crate::auth::Auth>,
    /// Serving on the peer port (followers' hand-overs to the leader): a
    /// certificate names a member there, never a user.
    pub peer_port: bool,
}

impl ServiceContext {
    /// Runs `fut` within the request timeout.
    pub async fn with_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .unwrap_or_else(|_| Err(crate::status::timed_out()))
    }

    /// Waits until a linearizable read may be served locally.
    pub async fn linearizable_barrier(&self) -> Result<(), tonic::Status> {
        self.with_timeout(async {
            self.node
                .read_barrier()
                .await
                .map_err(|e| crate::status::from_node(&e))?;
            Ok(())
        })
        .await
    }

    /// Who a client request comes from: the user its `token` (or, from the
    /// gateway, `authorization`) metadata names, else with
    /// `--client-cert-auth` and auth enabled the Common Name of its verified
    /// client certificate, else nobody. A token this member does not know
    /// is refused (`invalid auth token`), as etcd does; a simple token from
    /// an index this member has not applied yet waits for it.
    pub async fn caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<crate::auth::Caller, tonic::Status> {
        let common_name = crate::tls::client_common_name(extensions);
        self.caller_with(metadata, common_name).await
    }

    /// [`Self::caller`] with the certificate's Common Name already read.
    pub async fn caller_with(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        common_name: Option<&str>,
    ) -> Result<crate::auth::Caller, tonic::Status> {
        use crate::auth::{tokens, AuthError, Caller};
        let token = metadata
            .get("token")
            .or_else(|| metadata.get("authorization"));
        if let Some(token) = token {
            let token = token.to_str().map_err(|_| AuthError::InvalidAuthToken)?;
            if let Some(jwt) = &self.auth.jwt {
                let info = jwt.verify(token).ok_or(AuthError::InvalidAuthToken)?;
                let state = self.auth.state();
                if state.enabled() && info.revision < state.revision() {
                    return Err(AuthError::AuthOldRevision.into());
                }
                return Ok(Caller::Client {
                    user: Some(info.user),
                });
            }
            let index = tokens::simple_token_index(token).ok_or(AuthError::InvalidAuthToken)?;
            if index > self.node.shared().applied_index() {
                self.linearizable_barrier().await?;
            }
            return match self.auth.tokens.user(token) {
                Some(user) => Ok(Caller::Client { user: Some(user) }),
                None => Err(AuthError::InvalidAuthToken.into()),
            };
        }
        // On the peer port the certificate is a member's, not a user's.
        if self.auth.client_cert_auth && !self.peer_port && self.auth.state().enabled() {
            if let Some(name) = common_name {
                return Ok(Caller::Client {
                    user: Some(name.to_string()),
                });
            }
        }
        Ok(Caller::ANONYMOUS)
    }

    /// [`Self::caller`] of a request.
    pub async fn caller_of<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<crate::auth::Caller, tonic::Status> {
        self.caller(request.metadata(), request.extensions()).await
    }

    /// Refuses `caller` an administrative call unless it is root (with
    /// auth enabled).
    pub fn require_admin(&self, caller: &crate::auth::Caller) -> Result<(), tonic::Status> {
        crate::auth::request::authorize_admin(&self.auth.state(), caller).map_err(Into::into)
    }

    /// Refuses `request` unless its caller is root (with auth enabled).
    pub async fn require_admin_of<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<(), tonic::Status> {
        let caller = self.caller_of(request).await?;
        self.require_admin(&caller)
    }

    /// Refuses `caller` the write `op` if its permissions do not allow it
    /// (the same rule every member applies again when it applies the write).
    pub fn authorize(
        &self,
        caller: &crate::auth::Caller,
        op: &crate::replicated::replicated_request::Op,
    ) -> Result<(), tonic::Status> {
        let lease_keys = |id: i64| self.store.lease_keys(id);
        crate::auth::request::authorize(&self.auth.state(), caller, op, &lease_keys)
            .map_err(|e| crate::status::from_mvcc(&e))?
            .map_err(Into::into)
    }

    /// Replicates a write made for `caller` and returns its outcome; an
    /// error outcome becomes the etcd error it describes.
    pub async fn propose(
        &self,
        caller: &crate::auth::Caller,
        metadata: &tonic::metadata::MetadataMap,
        op: crate::replicated::replicated_request::Op,
    ) -> Result<Outcome, tonic::Status> {
        use prost::Message as _;
        let (client_id, sequence) = kv::request_id(metadata)?;
        let request = crate::replicated::ReplicatedRequest {
            client_id,
            sequence,
            proposed_at_ms: self.cluster_clock.now_ms(),
            user: caller.user_name().to_string(),
            internal: *caller == crate::auth::Caller::Server,
            op: Some(op),
        };
        let payload = bytes::Bytes::from(request.encode_to_vec());
        let outcome = self
            .with_timeout(async {
                self.node
                    .propose(payload)
                    .await
                    .map_err(|e| crate::status::from_node(&e))
            })
            .await?;
        if let Some(crate::replicated::outcome::Result::Error(err)) = &outcome.result {
            return Err(tonic::Status::new(
                tonic::Code::from_i32(err.code),
                err.message.clone(),
            ));
        }
        Ok(outcome)
    }

    /// A channel to the current leader's Lease and Cluster services (on its
    /// peer URL), when this member is not the leader. Reused while the
    /// leader stays the same.
    pub fn leader_channel(&self) -> Result<tonic::transport::Channel, tonic::Status> {
        let leader = self.node.shared().leader_id();
        if leader == 0 {
            return Err(crate::status::from_node(&crate::error::NodeError::NoLeader));
        }
        let mut link = self
            .leader_link
            .lock()
            .map_err(|_| tonic::Status::internal("etcdserver: leader link poisoned"))?;
        if let Some((id, channel)) = link.as_ref() {
            if *id == leader {
                return Ok(channel.clone());
            }
        }
        // The peer URL is known from the moment a member is added (client
        // URLs only once it has published them); members serve the lease
        // and cluster services there for exactly this hand-over.
        let url = self.members.peer_url(leader).ok_or_else(|| {
            tonic::Status::unavailable("etcdserver: the leader's address is not known yet")
        })?;
        let channel = self
            .peer_dialer
            .endpoint(&url)
            .map_err(|e| tonic::Status::unavailable(format!("etcdserver: leader URL {url}: {e}")))?
            .connect_timeout(self.request_timeout);
        let channel = self.peer_dialer.connect_lazy(channel);
        *link = Some((leader, channel.clone()));
        Ok(channel)
    }

    /// A response header as etcd fills it.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.node.shared().term(),
        })
    }
}
