//! The refusals of etcd's auth, with etcd's gRPC codes and exact strings
//! (clients match on the strings: etcd's Go client re-authenticates on
//! `invalid auth token` and `revision of auth store is old`).

use tonic::{Code, Status};

/// Why an auth operation or a permission check refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Enabling auth needs a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// Enabling auth needs the `root` user to hold the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of an existing name.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// No user name: none given, or a request without credentials while
    /// auth is enabled.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// No such user.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of an existing name.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// No such role.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd without a name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// Wrong user name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A password given for a user added with `no_password` (etcd leaves
    /// this one unmapped, so it reaches clients as Unknown).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// The user lacks the permission.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not hold.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not hold.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token not (or no longer) known.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock everyone out (root's role, root itself)
    /// or an invalid permission range.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A token issued before the auth store last changed.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
}

impl AuthError {
    /// The gRPC code etcd answers this with.
    pub fn code(&self) -> Code {
        match self {
            Self::UserEmpty
            | Self::RoleEmpty
            | Self::AuthFailed
            | Self::PermissionNotGiven
            | Self::InvalidAuthMgmt
            | Self::AuthOldRevision => Code::InvalidArgument,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::InvalidAuthToken => Code::Unauthenticated,
            Self::NoPasswordUser => Code::Unknown,
            Self::RootUserNotExist
            | Self::RootRoleNotExist
            | Self::UserAlreadyExist
            | Self::UserNotFound
            | Self::RoleAlreadyExist
            | Self::RoleNotFound
            | Self::RoleNotGranted
            | Self::PermissionNotGranted
            | Self::AuthNotEnabled => Code::FailedPrecondition,
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_etcds_codes_and_strings() {
        let denied = Status::from(AuthError::PermissionDenied);
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(denied.message(), "etcdserver: permission denied");
        let token = Status::from(AuthError::InvalidAuthToken);
        assert_eq!(token.code(), Code::Unauthenticated);
        assert_eq!(token.message(), "etcdserver: invalid auth token");
        let empty = Status::from(AuthError::UserEmpty);
        assert_eq!(empty.code(), Code::InvalidArgument);
        assert_eq!(empty.message(), "etcdserver: user name is empty");
    }
}
