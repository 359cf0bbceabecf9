//! The error convention: domain errors say what went wrong in domain terms, and one `From` impl
//! picks the gRPC status. Internal details go to the log (inside the request's span, so with its
//! trace and request ids), never to the client.

use tonic::{Code, Status};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid: `items[2].quantity must be between 1 and 100`.
    #[error("{field} {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change won (stale version); the client may re-read and retry.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// More than the service takes now (a bounded queue is full, or a caller's budget is spent):
    /// retry after `retry_after`, which travels as `retry-after` metadata (whole seconds) and
    /// becomes the gateway's `Retry-After` header.
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A dependency (database, broker, another service) did not answer.
    #[error("{dependency} is unavailable")]
    Unavailable {
        dependency: String,
        #[source]
        source: BoxError,
    },
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn unavailable(dependency: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            dependency: dependency.into(),
            source: source.into(),
        }
    }

    pub fn exhausted(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self::ResourceExhausted {
            message: message.into(),
            retry_after,
        }
    }

    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self::Internal(source.into())
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Aborted(_) => Code::Aborted,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::Unavailable { dependency, source } => {
                tracing::warn!(%dependency, error = %source, "dependency unavailable");
            }
            Error::Internal(source) => tracing::error!(error = %source, "internal error"),
            _ => {}
        }
        let mut status = Status::new(error.code(), error.to_string());
        if let Error::ResourceExhausted { retry_after, .. } = &error {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = seconds.to_string().parse() {
                status.metadata_mut().insert(RETRY_AFTER, value);
            }
        }
        status
    }
}

/// The metadata key saying how many seconds to wait before retrying.
pub const RETRY_AFTER: &str = "retry-after";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(Error::invalid(
            "items[2].quantity",
            "must be between 1 and 100",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "items[2].quantity must be between 1 and 100"
        );
    }

    #[test]
    fn internal_details_do_not_reach_the_client() {
        let status = Status::from(Error::internal("relation \"orders\" does not exist"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn an_unavailable_dependency_is_named_without_its_error() {
        let status = Status::from(Error::unavailable(
            "database",
            "connection refused 10.0.0.7:5432",
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "database is unavailable");
    }

    #[test]
    fn each_domain_error_has_its_own_code() {
        let cases = [
            (
                Error::NotFound("order 42".into()),
                Code::NotFound,
                "order 42 not found",
            ),
            (
                Error::AlreadyExists("email taken".into()),
                Code::AlreadyExists,
                "email taken",
            ),
            (
                Error::FailedPrecondition("shipped".into()),
                Code::FailedPrecondition,
                "shipped",
            ),
            (
                Error::Aborted("stale version".into()),
                Code::Aborted,
                "stale version",
            ),
            (
                Error::Unauthenticated("bad token".into()),
                Code::Unauthenticated,
                "bad token",
            ),
            (
                Error::PermissionDenied("admins only".into()),
                Code::PermissionDenied,
                "admins only",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }
}
