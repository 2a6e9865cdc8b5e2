//! etcd's gRPC errors: the codes and exact message strings clients match on.

use raftkv_mvcc::MvccError;
use tonic::{Code, Status};

use crate::error::NodeError;

/// `etcdserver: key is not provided`.
pub fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

/// `etcdserver: request is too large`.
pub fn request_too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

/// `etcdserver: too many operations in txn request`.
pub fn too_many_ops() -> Status {
    Status::invalid_argument("etcdserver: too many operations in txn request")
}

/// `etcdserver: invalid sort option`.
pub fn invalid_sort_option() -> Status {
    Status::invalid_argument("etcdserver: invalid sort option")
}

/// `etcdserver: request timed out`.
pub fn timed_out() -> Status {
    Status::unavailable("etcdserver: request timed out")
}

/// A write whose request id is older than the ones its client still has
/// remembered: raftkv's own error (etcd has no request ids).
pub fn request_superseded() -> Status {
    Status::failed_precondition(format!(
        "raftkv: request sequence superseded: {} later requests of this client \
         were applied, so whether this one was cannot be told; it was not applied now",
        crate::outcomes::OUTCOMES_PER_CLIENT
    ))
}

/// `etcdserver: member not found`.
pub fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

/// `etcdserver: member ID already exist`.
pub fn member_exists() -> Status {
    Status::failed_precondition("etcdserver: member ID already exist")
}

/// `etcdserver: Peer URLs already exists`.
pub fn peer_url_exists() -> Status {
    Status::failed_precondition("etcdserver: Peer URLs already exists")
}

/// `etcdserver: given member URLs are invalid`.
pub fn member_bad_urls() -> Status {
    Status::invalid_argument("etcdserver: given member URLs are invalid")
}

/// `etcdserver: can only promote a learner member`.
pub fn member_not_learner() -> Status {
    Status::failed_precondition("etcdserver: can only promote a learner member")
}

/// `etcdserver: can only promote a learner member which is in sync with leader`.
pub fn learner_not_ready() -> Status {
    Status::failed_precondition(
        "etcdserver: can only promote a learner member which is in sync with leader",
    )
}

/// `etcdserver: too many learner members in cluster`.
pub fn too_many_learners() -> Status {
    Status::failed_precondition("etcdserver: too many learner members in cluster")
}

/// `etcdserver: re-configuration failed due to not enough started members`.
pub fn not_enough_started_members() -> Status {
    Status::failed_precondition(
        "etcdserver: re-configuration failed due to not enough started members",
    )
}

/// A store error as etcd answers it.
pub fn from_mvcc(err: &MvccError) -> Status {
    let code = match err {
        MvccError::Compacted | MvccError::FutureRev => Code::OutOfRange,
        MvccError::DuplicateKey
        | MvccError::TooManyOps
        | MvccError::KeyNotFound
        | MvccError::EmptyKey
        | MvccError::ValueProvided
        | MvccError::LeaseProvided => Code::InvalidArgument,
        MvccError::LeaseNotFound => Code::NotFound,
        MvccError::LeaseExists => Code::FailedPrecondition,
        // A read that kept racing compactions: clients retry Unavailable.
        MvccError::ReadRaced => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, err.to_string())
}

/// A node error as etcd answers it.
pub fn from_node(err: &NodeError) -> Status {
    match err {
        NodeError::NoLeader => Status::unavailable("etcdserver: no leader"),
        NodeError::LeaderChanged => Status::unavailable("etcdserver: leader changed"),
        NodeError::Stopped => Status::unavailable("etcdserver: server stopped"),
        NodeError::Refused(reason) => Status::unavailable(format!("etcdserver: {reason}")),
        NodeError::Fatal(reason) => Status::internal(format!("etcdserver: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_etcds_codes_and_strings() {
        let status = from_mvcc(&MvccError::Compacted);
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        assert_eq!(from_mvcc(&MvccError::FutureRev).code(), Code::OutOfRange);
        assert_eq!(
            from_mvcc(&MvccError::DuplicateKey).message(),
            "etcdserver: duplicate key given in txn request"
        );
        assert_eq!(from_mvcc(&MvccError::LeaseNotFound).code(), Code::NotFound);
        assert_eq!(from_mvcc(&MvccError::ReadRaced).code(), Code::Unavailable);
    }

    #[test]
    fn node_errors_are_unavailable_with_etcds_strings() {
        assert_eq!(
            from_node(&NodeError::NoLeader).message(),
            "etcdserver: no leader"
        );
        assert_eq!(
            from_node(&NodeError::LeaderChanged).code(),
            Code::Unavailable
        );
    }
}
