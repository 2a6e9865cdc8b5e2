//! The auth store: whether auth is enabled, its revision, the users and the
//! roles, as replicated records, and the checks made against them.
//!
//! Every change comes through the Raft log and is applied by every member
//! at the same index, so members agree on it; the records are server
//! records of the MVCC store (namespaces [`META`], [`USERS`], [`ROLES`]),
//! so they survive restarts and travel in snapshots, `snapshot save` and
//! `snapshot restore` included. [`AuthState`] is the in-memory copy, with
//! each user's permissions merged over its roles.
//!
//! The rules and refusals are etcd's: `root` (user and role) must exist
//! before auth is enabled and cannot be removed while it is; a grant of a
//! role already held changes nothing; most changes move the revision on.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use raftkv_mvcc::{Batch, MvccError, Store};
use raftkv_proto::authpb::{Permission, Role, User, UserAddOptions};
use raftkv_proto::etcdserverpb as pb;

use super::perms::{is_valid_permission_range, Access, UserPermissions};
use super::AuthError;

/// Namespace of the enabled flag and the revision.
pub const META: &str = "auth";
/// Namespace of the users, by name.
pub const USERS: &str = "auth_user";
/// Namespace of the roles, by name.
pub const ROLES: &str = "auth_role";

const ENABLED_KEY: &[u8] = b"enabled";
const REVISION_KEY: &[u8] = b"revision";

/// The user and the role that administer the cluster.
pub const ROOT: &str = "root";

/// The auth store as of some applied index.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Derived: each user's permissions, merged over its roles.
    permissions: HashMap<String, UserPermissions>,
}

impl Default for AuthState {
    fn default() -> Self {
        // etcd's store starts at revision 1.
        Self {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            permissions: HashMap::new(),
        }
    }
}

/// What a change applied yields, besides the records it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The change is made (or was already).
    Changed,
    /// A user's tokens must be forgotten (deleted, or a new password).
    InvalidateUser(String),
    /// Auth was disabled: every token must be forgotten.
    Disabled,
}

/// Decodes a record the store holds; a record that does not decode is a
/// corrupt store, not a request error.
fn decode<M: prost::Message + Default>(what: &str, bytes: &[u8]) -> Result<M, MvccError> {
    M::decode(bytes).map_err(|e| MvccError::Corruption(format!("auth {what} record: {e}")))
}

impl AuthState {
    /// The auth store as the store last applied it.
    pub fn load(store: &Store) -> Result<Self, MvccError> {
        Self::from_records(
            store.aux_scan(META)?,
            store.aux_scan(USERS)?,
            store.aux_scan(ROLES)?,
        )
    }

    fn from_records(
        meta: Vec<(Vec<u8>, Vec<u8>)>,
        users: Vec<(Vec<u8>, Vec<u8>)>,
        roles: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, MvccError> {
        let mut state = Self::default();
        for (key, value) in meta {
            match key.as_slice() {
                ENABLED_KEY => state.enabled = value == [1],
                REVISION_KEY => {
                    let bytes: [u8; 8] = value.as_slice().try_into().map_err(|_| {
                        MvccError::Corruption("auth revision record is not 8 bytes".into())
                    })?;
                    state.revision = u64::from_be_bytes(bytes);
                }
                _ => {}
            }
        }
        for (_, value) in users {
            let user: User = decode("user", &value)?;
            state
                .users
                .insert(String::from_utf8_lossy(&user.name).into_owned(), user);
        }
        for (_, value) in roles {
            let role: Role = decode("role", &value)?;
            state
                .roles
                .insert(String::from_utf8_lossy(&role.name).into_owned(), role);
        }
        state.refresh_permissions();
        Ok(state)
    }

    /// Whether auth is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: moved on by every change of users, roles,
    /// permissions and by disabling.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user's name, in order.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every role's name, in order.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Whether `user` holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    fn is_root(&self, user: &str) -> bool {
        self.has_role(user, ROOT)
    }

    /// etcd's check of a key operation: allowed when auth is disabled;
    /// otherwise the caller must be a user that exists and holds `root` or
    /// a permission covering the range.
    pub fn check(
        &self,
        user: Option<&str>,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Err(AuthError::UserEmpty);
        };
        if !self.users.contains_key(user) {
            return Err(AuthError::PermissionDenied);
        }
        if self.is_root(user) {
            return Ok(());
        }
        let allowed = self
            .permissions
            .get(user)
            .is_some_and(|p| p.allows(access, key, range_end));
        if allowed {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's check of an administrative operation: allowed when auth is
    /// disabled; otherwise only to a user holding `root`.
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Err(AuthError::UserEmpty);
        };
        if !self.users.contains_key(user) {
            return Err(AuthError::UserNotFound);
        }
        if self.is_root(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// With auth enabled, the caller must at least be a user that exists
    /// (raftkv's rule for Compact, which etcd lets anyone call).
    pub fn check_user(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        match user.filter(|u| !u.is_empty()) {
            None => Err(AuthError::UserEmpty),
            Some(user) if self.users.contains_key(user) => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// The bcrypt hash a password check compares with, once the user is
    /// known to authenticate by password.
    pub fn password_hash(&self, user: &str) -> Result<&[u8], AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(user).ok_or(AuthError::AuthFailed)?;
        if no_password(user) {
            return Err(AuthError::NoPasswordUser);
        }
        Ok(&user.password)
    }

    fn refresh_permissions(&mut self) {
        let roles = &self.roles;
        self.permissions = self
            .users
            .iter()
            .map(|(name, user)| {
                let perms = user
                    .roles
                    .iter()
                    .filter_map(|r| roles.get(r))
                    .flat_map(|r| r.key_permission.iter());
                (name.clone(), UserPermissions::merge(perms))
            })
            .collect();
    }

    fn commit_revision(&mut self, batch: &mut Batch<'_>) -> Result<(), MvccError> {
        self.revision += 1;
        batch.aux_put(META, REVISION_KEY, &self.revision.to_be_bytes())
    }

    fn put_user(&mut self, batch: &mut Batch<'_>, user: User) -> Result<(), MvccError> {
        batch.aux_put(USERS, &user.name, &user.encode_to_vec())?;
        self.users
            .insert(String::from_utf8_lossy(&user.name).into_owned(), user);
        Ok(())
    }

    fn put_role(&mut self, batch: &mut Batch<'_>, role: Role) -> Result<(), MvccError> {
        batch.aux_put(ROLES, &role.name, &role.encode_to_vec())?;
        self.roles
            .insert(String::from_utf8_lossy(&role.name).into_owned(), role);
        Ok(())
    }

    /// Applies one change, writing its records into `batch`. A refused
    /// change writes nothing.
    pub fn apply(
        &mut self,
        batch: &mut Batch<'_>,
        change: &AuthChange,
    ) -> Result<Result<Applied, AuthError>, MvccError> {
        let result = self.apply_inner(batch, change);
        if matches!(result, Ok(Ok(_))) {
            self.refresh_permissions();
        }
        result
    }

    fn apply_inner(
        &mut self,
        batch: &mut Batch<'_>,
        change: &AuthChange,
    ) -> Result<Result<Applied, AuthError>, MvccError> {
        use AuthChange as C;
        Ok(Ok(match change {
            C::Enable => {
                if self.enabled {
                    return Ok(Ok(Applied::Changed));
                }
                let Some(root) = self.users.get(ROOT) else {
                    return Ok(Err(AuthError::RootUserNotExist));
                };
                if !root.roles.iter().any(|r| r == ROOT) {
                    return Ok(Err(AuthError::RootRoleNotExist));
                }
                batch.aux_put(META, ENABLED_KEY, &[1])?;
                self.enabled = true;
                Applied::Changed
            }
            C::Disable => {
                if !self.enabled {
                    return Ok(Ok(Applied::Changed));
                }
                batch.aux_put(META, ENABLED_KEY, &[0])?;
                self.enabled = false;
                self.commit_revision(batch)?;
                Applied::Disabled
            }
            C::UserAdd(req) => {
                if req.name.is_empty() {
                    return Ok(Err(AuthError::UserEmpty));
                }
                if self.users.contains_key(&req.name) {
                    return Ok(Err(AuthError::UserAlreadyExist));
                }
                let options = req.options.unwrap_or(UserAddOptions { no_password: false });
                let password = if options.no_password {
                    Vec::new()
                } else {
                    match stored_hash(&req.hashed_password) {
                        Some(hash) => hash,
                        None => return Ok(Err(AuthError::NoPasswordUser)),
                    }
                };
                let user = User {
                    name: req.name.as_bytes().to_vec(),
                    password,
                    roles: Vec::new(),
                    options: Some(options),
                };
                self.put_user(batch, user)?;
                self.commit_revision(batch)?;
                Applied::Changed
            }
            C::UserDelete(req) => {
                if self.enabled && req.name == ROOT {
                    return Ok(Err(AuthError::InvalidAuthMgmt));
                }
                if self.users.remove(&req.name).is_none() {
                    return Ok(Err(AuthError::UserNotFound));
                }
                batch.aux_delete(USERS, req.name.as_bytes())?;
                self.commit_revision(batch)?;
                Applied::InvalidateUser(req.name.clone())
            }
            C::UserChangePassword(req) => {
                let Some(user) = self.users.get(&req.name) else {
                    return Ok(Err(AuthError::UserNotFound));
                };
                let mut user = user.clone();
                if !no_password(&user) {
                    match stored_hash(&req.hashed_password) {
                        Some(hash) => user.password = hash,
                        None => return Ok(Err(AuthError::NoPasswordUser)),
                    }
                }
                self.put_user(batch, user)?;
                self.commit_revision(batch)?;
                Applied::InvalidateUser(req.name.clone())
            }
            C::UserGrantRole(req) => {
                let Some(user) = self.users.get(&req.user) else {
                    return Ok(Err(AuthError::UserNotFound));
                };
                if req.role != ROOT && !self.roles.contains_key(&req.role) {
                    return Ok(Err(AuthError::RoleNotFound));
                }
                if user.roles.contains(&req.role) {
                    return Ok(Ok(Applied::Changed));
                }
                let mut user = user.clone();
                user.roles.push(req.role.clone());
                user.roles.sort();
                self.put_user(batch, user)?;
                self.commit_revision(batch)?;
                Applied::Changed
            }
            C::UserRevokeRole(req) => {
                if self.enabled && req.name == ROOT && req.role == ROOT {
                    return Ok(Err(AuthError::InvalidAuthMgmt));
                }
                let Some(user) = self.users.get(&req.name) else {
                    return Ok(Err(AuthError::UserNotFound));
                };
                let mut user = user.clone();
                let before = user.roles.len();
                user.roles.retain(|r| *r != req.role);
                if user.roles.len() == before {
                    return Ok(Err(AuthError::RoleNotGranted));
                }
                self.put_user(batch, user)?;
                self.commit_revision(batch)?;
                Applied::Changed
            }
            C::RoleAdd(req) => {
                if req.name.is_empty() {
                    return Ok(Err(AuthError::RoleEmpty));
                }
                if self.roles.contains_key(&req.name) {
                    return Ok(Err(AuthError::RoleAlreadyExist));
                }
                let role = Role {
                    name: req.name.as_bytes().to_vec(),
                    key_permission: Vec::new(),
                };
                self.put_role(batch, role)?;
                self.commit_revision(batch)?;
                Applied::Changed
            }
            C::RoleDelete(req) => {
                if self.enabled && req.role == ROOT {
                    return Ok(Err(AuthError::InvalidAuthMgmt));
                }
                if self.roles.remove(&req.role).is_none() {
                    return Ok(Err(AuthError::RoleNotFound));
                }
                batch.aux_delete(ROLES, req.role.as_bytes())?;
                let holders: Vec<User> = self
                    .users
                    .values()
                    .filter(|u| u.roles.contains(&req.role))
                    .cloned()
                    .collect();
                for mut user in holders {
                    user.roles.retain(|r| *r != req.role);
                    self.put_user(batch, user)?;
                }
                self.commit_revision(batch)?;
                Applied::Changed
            }
            C::RoleGrantPermission(req) => {
                let Some(perm) = &req.perm else {
                    return Ok(Err(AuthError::PermissionNotGiven));
                };
                if !is_valid_permission_range(&perm.key, &perm.range_end) {
                    return Ok(Err(AuthError::InvalidAuthMgmt));
                }
                let Some(role) = self.roles.get(&req.name) else {
                    return Ok(Err(AuthError::RoleNotFound));
                };
                let mut role = role.clone();
                match role
                    .key_permission
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(existing) => existing.perm_type = perm.perm_type,
                    None => {
                        role.key_permission.push(Permission {
                            perm_type: perm.perm_type,
                            key: perm.key.clone(),
                            range_end: perm.range_end.clone(),
                        });
                        // etcd keeps them sorted by key (stable for equal keys).
                        role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                self.put_role(batch, role)?;
                self.commit_revision(batch)?;
                Applied::Changed
            }
            C::RoleRevokePermission(req) => {
                let Some(role) = self.roles.get(&req.role) else {
                    return Ok(Err(AuthError::RoleNotFound));
                };
                let mut role = role.clone();
                let before = role.key_permission.len();
                role.key_permission
                    .retain(|p| !(p.key == req.key && p.range_end == req.range_end));
                if role.key_permission.len() == before {
                    return Ok(Err(AuthError::PermissionNotGranted));
                }
                self.put_role(batch, role)?;
                self.commit_revision(batch)?;
                Applied::Changed
            }
        }))
    }
}

fn no_password(user: &User) -> bool {
    user.options.is_some_and(|o| o.no_password)
}

/// The bcrypt hash to store, from a request's base64 `hashedPassword`
/// (the proposer hashes a plain password before it enters the log).
fn stored_hash(hashed_password: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(hashed_password)
        .ok()
}

/// A change of the auth store, as replicated (passwords only as hashes).
#[derive(Debug, Clone, PartialEq)]
pub enum AuthChange {
    /// AuthEnable.
    Enable,
    /// AuthDisable.
    Disable,
    /// UserAdd, `hashed_password` set.
    UserAdd(pb::AuthUserAddRequest),
    /// UserDelete.
    UserDelete(pb::AuthUserDeleteRequest),
    /// UserChangePassword, `hashed_password` set.
    UserChangePassword(pb::AuthUserChangePasswordRequest),
    /// UserGrantRole.
    UserGrantRole(pb::AuthUserGrantRoleRequest),
    /// UserRevokeRole.
    UserRevokeRole(pb::AuthUserRevokeRoleRequest),
    /// RoleAdd.
    RoleAdd(pb::AuthRoleAddRequest),
    /// RoleDelete.
    RoleDelete(pb::AuthRoleDeleteRequest),
    /// RoleGrantPermission.
    RoleGrantPermission(pb::AuthRoleGrantPermissionRequest),
    /// RoleRevokePermission.
    RoleRevokePermission(pb::AuthRoleRevokePermissionRequest),
}
