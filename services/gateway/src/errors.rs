//! Every error leaves the gateway in one shape, `{code, message, details}` (the gRPC status code
//! as a number, as grpc-gateway and Kong write it), with the HTTP status of the standard mapping.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tonic::Code;

/// The HTTP status for a gRPC code (google.rpc.Code's documented mapping).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error response: HTTP status, gRPC code and a message a person can act on.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) allow: Option<String>,
    /// Seconds for `Retry-After`.
    pub(crate) retry_after: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }

    /// The service's answer as REST. Overload and spent budgets (RESOURCE_EXHAUSTED, UNAVAILABLE)
    /// say when to come back: the service's `retry-after` metadata, else one second.
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        let mut error = Self::new(http_status(status.code()), status.code(), status.message());
        if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable) {
            let told = status
                .metadata()
                .get(shop_common::error::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.parse::<u64>().is_ok());
            error.retry_after = Some(told.unwrap_or("1").to_owned());
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code as i32,
            "message": self.message,
            "details": [],
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        if let Some(seconds) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_standard_http_statuses() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn a_spent_budget_or_overload_says_when_to_come_back() {
        let mut throttled = tonic::Status::resource_exhausted("too many failed sign-ins");
        throttled.metadata_mut().insert(
            "retry-after",
            tonic::metadata::MetadataValue::from_static("8"),
        );
        let response = ApiError::from_status(&throttled).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"8"[..])
        );
        let overloaded = ApiError::from_status(&tonic::Status::unavailable("busy")).into_response();
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            overloaded
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let refused =
            ApiError::from_status(&tonic::Status::not_found("no such order")).into_response();
        assert!(refused.headers().get(header::RETRY_AFTER).is_none());
    }
}
