//! The Auth service: etcd's authentication, users and roles.
//!
//! Changes (enable, disable, users, roles, permissions) are proposed
//! through Raft and applied on every member by [`crate::auth::state`];
//! only root may make them once auth is enabled, which every member checks
//! again when it applies them. Passwords are hashed (bcrypt) by the member
//! that receives them, so no password enters the log. Authenticate checks
//! the password here and replicates only the user and a token prefix. The
//! reads (UserGet, UserList, RoleGet, RoleList, AuthStatus) are served
//! after a read-index barrier, with etcd's rules: root, or a user asking
//! about itself or a role it holds.

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_server::Auth as AuthRpc;
use tonic::{Request, Response, Status};

use super::ServiceContext;
use crate::auth::{tokens, AuthError, Caller};
use crate::replicated::{outcome, replicated_request::Op, Authenticate};
use crate::status;

/// The Auth service.
pub struct AuthService {
    ctx: ServiceContext,
}

impl AuthService {
    /// The Auth service over `ctx`.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { ctx }
    }

    fn header(&self) -> Result<Option<pb::ResponseHeader>, Status> {
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(self.ctx.header(revision))
    }

    /// Proposes an auth change for the request's caller (refused here
    /// already if the caller is not root, once auth is enabled).
    async fn change<T>(&self, request: Request<T>, op: impl FnOnce(T) -> Op) -> Result<(), Status> {
        let caller = self.ctx.caller_of(&request).await?;
        let (metadata, _, message) = request.into_parts();
        let op = op(message);
        self.ctx.authorize(&caller, &op)?;
        let outcome = self.ctx.propose(&caller, &metadata, op).await?;
        match outcome.result {
            Some(outcome::Result::AuthChanged(_)) => Ok(()),
            _ => Err(Status::internal(
                "etcdserver: unexpected outcome for the request",
            )),
        }
    }

    /// Reads the auth store as of now (after a read-index barrier).
    async fn read_state(&self) -> Result<std::sync::Arc<crate::auth::AuthState>, Status> {
        self.ctx.linearizable_barrier().await?;
        Ok(self.ctx.auth.state())
    }
}

#[tonic::async_trait]
impl AuthRpc for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        self.change(request, Op::AuthEnable).await?;
        tracing::info!("auth enabled");
        Ok(Response::new(pb::AuthEnableResponse {
            header: self.header()?,
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        self.change(request, Op::AuthDisable).await?;
        tracing::info!("auth disabled");
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.header()?,
        }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let caller = self.ctx.caller_of(&request).await?;
        let state = self.read_state().await?;
        crate::auth::request::authorize_admin(&state, &caller)?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header()?,
            enabled: state.enabled(),
            auth_revision: state.revision(),
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        // As etcd: retry while the auth store changed between the password
        // check and the token's entry (the password may have changed).
        for _ in 0..3 {
            let state = self.read_state().await?;
            let checked_revision = state.revision();
            if let Err(refused) = self
                .ctx
                .auth
                .check_password(&request.name, request.password.clone())
                .await
            {
                if refused != AuthError::AuthNotEnabled {
                    tracing::warn!(user = %request.name, error = %refused, "invalid authentication was requested");
                }
                return Err(refused.into());
            }
            if let Some(jwt) = &self.ctx.auth.jwt {
                // A JWT carries the revision it was issued at; no member
                // needs to learn of it.
                let token = jwt
                    .issue(&request.name, checked_revision)
                    .map_err(Status::unknown)?;
                return Ok(Response::new(pb::AuthenticateResponse {
                    header: self.header()?,
                    token,
                }));
            }
            let op = Op::Authenticate(Authenticate {
                name: request.name.clone(),
                token_prefix: tokens::new_prefix(),
            });
            let outcome = self.ctx.propose(&Caller::ANONYMOUS, &metadata, op).await?;
            let Some(outcome::Result::Authenticated(mut response)) = outcome.result else {
                return Err(Status::internal(
                    "etcdserver: unexpected outcome for the request",
                ));
            };
            if self.ctx.auth.state().revision() == checked_revision {
                response.header = self.header()?;
                return Ok(Response::new(response));
            }
            tracing::info!("auth store changed while a password was checked; checking again");
        }
        Err(status::timed_out())
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let (metadata, extensions, mut message) = request.into_parts();
        let no_password = message.options.is_some_and(|o| o.no_password);
        if !no_password && message.hashed_password.is_empty() {
            let password = std::mem::take(&mut message.password);
            message.hashed_password = self.ctx.auth.hash_password(password).await?;
        }
        message.password.clear();
        let request = Request::from_parts(metadata, extensions, message);
        self.change(request, Op::UserAdd).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: self.header()?,
        }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = self.ctx.caller_of(&request).await?;
        let name = request.into_inner().name;
        let state = self.read_state().await?;
        if let Err(refused) = crate::auth::request::authorize_admin(&state, &caller) {
            if caller.user_name() != name {
                return Err(refused.into());
            }
        }
        let user = state.user(&name).ok_or(AuthError::UserNotFound)?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header()?,
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let caller = self.ctx.caller_of(&request).await?;
        let state = self.read_state().await?;
        crate::auth::request::authorize_admin(&state, &caller)?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header()?,
            users: state.user_names(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        self.change(request, Op::UserDelete).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: self.header()?,
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let (metadata, extensions, mut message) = request.into_parts();
        if message.hashed_password.is_empty() {
            let password = std::mem::take(&mut message.password);
            message.hashed_password = self.ctx.auth.hash_password(password).await?;
        }
        message.password.clear();
        let request = Request::from_parts(metadata, extensions, message);
        self.change(request, Op::UserChangePassword).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: self.header()?,
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        self.change(request, Op::UserGrantRole).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: self.header()?,
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        self.change(request, Op::UserRevokeRole).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: self.header()?,
        }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        self.change(request, Op::RoleAdd).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: self.header()?,
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = self.ctx.caller_of(&request).await?;
        let role = request.into_inner().role;
        let state = self.read_state().await?;
        if let Err(refused) = crate::auth::request::authorize_admin(&state, &caller) {
            if !state.has_role(caller.user_name(), &role) {
                return Err(refused.into());
            }
        }
        let found = state.role(&role).ok_or(AuthError::RoleNotFound)?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header()?,
            perm: found.key_permission.clone(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let caller = self.ctx.caller_of(&request).await?;
        let state = self.read_state().await?;
        crate::auth::request::authorize_admin(&state, &caller)?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header()?,
            roles: state.role_names(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        self.change(request, Op::RoleDelete).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: self.header()?,
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        self.change(request, Op::RoleGrantPermission).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: self.header()?,
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        self.change(request, Op::RoleRevokePermission).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: self.header()?,
        }))
    }
}
