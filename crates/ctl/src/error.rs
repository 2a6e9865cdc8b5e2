//! Errors, the words etcdctl prints for them, and its exit codes.
//!
//! etcdctl prints `Error: <message>` on stderr and exits with a code that
//! says what kind of failure it was; scripts test both, so raftkvctl keeps
//! them. A server error whose message is one of etcd's own (`etcdserver:
//! ...`) is printed as that message alone, as etcd's Go client turns it back
//! into a typed error; any other gRPC error is printed in grpc-go's
//! `rpc error: code = <Code> desc = <message>` form.

use tonic::Code;

/// The exit codes etcdctl uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// The request failed.
    Error = 1,
    /// A stream could not be kept (keep-alive of a missing lease).
    BadConnection = 2,
    /// Malformed input on stdin (txn).
    InvalidInput = 3,
    /// An option value or output format that is not supported.
    BadFeature = 4,
    /// A long-running command stopped (watch cancelled, snapshot failed).
    Interrupted = 5,
    /// Local I/O failed.
    Io = 6,
    /// Wrong arguments.
    BadArgs = 128,
}

/// A failed command: what to print after `Error: ` and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CtlError {
    /// The text after `Error: `.
    pub message: String,
    /// The process exit code.
    pub code: ExitCode,
}

impl CtlError {
    /// An error with an explicit exit code.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }

    /// Wrong arguments (exit 128).
    pub fn bad_args(message: impl Into<String>) -> Self {
        Self::new(ExitCode::BadArgs, message)
    }

    /// An unsupported feature, such as an output format (exit 4).
    pub fn bad_feature(message: impl Into<String>) -> Self {
        Self::new(ExitCode::BadFeature, message)
    }

    /// Malformed standard input (exit 3).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ExitCode::InvalidInput, message)
    }

    /// A command that failed, with a message (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Error, message)
    }

    /// A request that failed (exit 1).
    pub fn request(err: &ClientError) -> Self {
        Self::new(ExitCode::Error, err.to_string())
    }

    /// `<format> not supported as output format`, etcdctl's refusal.
    pub fn unsupported_format(format: &str) -> Self {
        Self::bad_feature(format!("{format} not supported as output format"))
    }
}

impl From<ClientError> for CtlError {
    fn from(err: ClientError) -> Self {
        Self::request(&err)
    }
}

/// Why a request through [`crate::client::Client`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (after retries, if retriable).
    #[error("{}", status_message(.0))]
    Status(tonic::Status),
    /// `--command-timeout` ran out before any attempt succeeded; etcdctl
    /// says it in Go's words.
    #[error("context deadline exceeded")]
    DeadlineExceeded {
        /// The last failure seen, for the debug log.
        last: Option<String>,
    },
    /// An endpoint that cannot be used (a malformed URL).
    #[error("{0}")]
    Endpoint(String),
    /// A TLS file that cannot be read or used, in etcdctl's words (`open
    /// <path>: no such file or directory`).
    #[error("{0}")]
    Tls(String),
}

impl ClientError {
    /// The gRPC status, if the server answered.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }
}

/// etcd's client-facing error messages (rpctypes). A status carrying one of
/// these is printed as the bare message, as etcdctl does.
const ETCD_ERRORS: &[&str] = &[
    "etcdserver: key is not provided",
    "etcdserver: key not found",
    "etcdserver: value is provided",
    "etcdserver: lease is provided",
    "etcdserver: too many operations in txn request",
    "etcdserver: duplicate key given in txn request",
    "etcdserver: invalid sort option",
    "etcdserver: mvcc: required revision has been compacted",
    "etcdserver: mvcc: required revision is a future revision",
    "etcdserver: mvcc: database space exceeded",
    "etcdserver: requested lease not found",
    "etcdserver: lease already exists",
    "etcdserver: too large lease TTL",
    "etcdserver: watch canceled",
    "etcdserver: member ID already exist",
    "etcdserver: Peer URLs already exists",
    "etcdserver: re-configuration failed due to not enough started members",
    "etcdserver: given member URLs are invalid",
    "etcdserver: member not found",
    "etcdserver: can only promote a learner member",
    "etcdserver: can only promote a learner member which is in sync with leader",
    "etcdserver: too many learner members in cluster",
    "etcdserver: request is too large",
    "etcdserver: too many requests",
    "etcdserver: root user does not exist",
    "etcdserver: root user does not have root role",
    "etcdserver: user name already exists",
    "etcdserver: user name is empty",
    "etcdserver: user name not found",
    "etcdserver: role name already exists",
    "etcdserver: role name not found",
    "etcdserver: role name is empty",
    "etcdserver: authentication failed, invalid user ID or password",
    "etcdserver: permission denied",
    "etcdserver: role is not granted to the user",
    "etcdserver: permission is not granted to the role",
    "etcdserver: authentication is not enabled",
    "etcdserver: invalid auth token",
    "etcdserver: invalid auth management",
    "etcdserver: revision of auth store is old",
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: not capable",
    "etcdserver: server stopped",
    "etcdserver: request timed out",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
    "etcdserver: request timed out, waiting for the applied index took too long",
    "etcdserver: unhealthy cluster",
    "etcdserver: corrupt cluster",
    "etcdserver: rpc not supported for learner",
    "etcdserver: bad leader transferee",
    "etcdserver: request canceled",
    "etcdserver: context deadline exceeded",
];

/// How etcdctl prints a gRPC status.
pub fn status_message(status: &tonic::Status) -> String {
    if ETCD_ERRORS.contains(&status.message()) {
        status.message().to_string()
    } else {
        format!(
            "rpc error: code = {} desc = {}",
            go_code_name(status.code()),
            status.message()
        )
    }
}

/// grpc-go's name of a status code.
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_errors_print_bare_and_others_in_grpc_go_form() {
        let known =
            tonic::Status::out_of_range("etcdserver: mvcc: required revision is a future revision");
        assert_eq!(
            status_message(&known),
            "etcdserver: mvcc: required revision is a future revision"
        );
        let other = tonic::Status::unimplemented("etcdserver: Defragment is not supported yet");
        assert_eq!(
            status_message(&other),
            "rpc error: code = Unimplemented desc = etcdserver: Defragment is not supported yet"
        );
    }
}
