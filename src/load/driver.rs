//! The one seam between what a virtual user does and how it reaches the shop: a [`Driver`] turns
//! a [`Call`] into a [`Reply`] over REST (through the gateway) or gRPC (straight to a service).

use std::{fmt, future::Future, time::Duration};

/// One request a virtual user (or the set-up) makes. Tokens are bearer access tokens.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    /// A page of the catalogue for the set-up, decoded into [`Reply::Products`].
    Catalogue {
        page_token: &'a str,
    },
    /// ListProducts in one category; the answer is read but not decoded.
    Browse {
        category: &'a str,
    },
    /// ListProducts matching a query; read but not decoded.
    Search {
        query: &'a str,
    },
    /// GetProduct; read but not decoded.
    View {
        product_id: &'a str,
    },
    /// PlaceOrder of one unit of a product, paid with `card`.
    PlaceOrder {
        token: &'a str,
        product_id: &'a str,
        card: &'a str,
        idempotency_key: &'a str,
    },
    /// GetOrder, decoded into [`Reply::Order`].
    GetOrder {
        token: &'a str,
        order_id: &'a str,
    },
    Register {
        email: &'a str,
        password: &'a str,
        display_name: &'a str,
    },
    Login {
        email: &'a str,
        password: &'a str,
    },
    Refresh {
        refresh_token: &'a str,
    },
    /// UpdateProduct of the stock alone (an admin token), at the version read.
    SetStock {
        token: &'a str,
        product_id: &'a str,
        version: i64,
        stock: i32,
    },
    /// GET of the driver's own URL (`--scenario url`); REST only.
    Url,
}

#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// Answered with success; the body was read and not needed.
    Done,
    Products {
        products: Vec<Product>,
        next_page_token: String,
    },
    Order {
        order_id: String,
        state: OrderState,
    },
    Tokens {
        access: String,
        refresh: String,
        expires_in_secs: u64,
    },
}

/// What the set-up needs of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Product {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) category: String,
    pub(crate) version: i64,
}

/// An order's status as far as a shopper waiting for it cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderState {
    /// Not settled yet (pending payment, paid): keep polling.
    Pending,
    /// Confirmed or shipped.
    Confirmed,
    Cancelled,
}

/// Why a call failed. [`Failure::kind`] is what the report groups by, so it never carries
/// free text (its cardinality stays small); the message is kept as an example.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    Http {
        status: u16,
        message: String,
        /// The `Retry-After` header: how long a rate limit or a busy service asks to wait.
        retry_after: Option<Duration>,
    },
    Grpc {
        code: tonic::Code,
        message: String,
        /// The `retry-after` metadata (whole seconds) of RESOURCE_EXHAUSTED.
        retry_after: Option<Duration>,
    },
    /// No connection could be made.
    Connect(String),
    /// The connection broke or the exchange could not be completed.
    Transport(String),
    /// No answer within `--timeout`.
    Timeout,
    /// An answer that does not say what it must (missing field, not JSON, …).
    BadReply(String),
}

impl Failure {
    pub(crate) fn kind(&self) -> String {
        match self {
            Self::Http { status, .. } => format!("HTTP {status}"),
            Self::Grpc { code, .. } => format!("gRPC {code:?}"),
            Self::Connect(_) => "connect error".to_owned(),
            Self::Transport(_) => "transport error".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::BadReply(_) => "bad reply".to_owned(),
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Self::Http { message, .. }
            | Self::Grpc { message, .. }
            | Self::Connect(message)
            | Self::Transport(message)
            | Self::BadReply(message) => message,
            Self::Timeout => "no answer within --timeout",
        }
    }

    /// The account exists already.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, Self::Http { status: 409, .. })
            || matches!(
                self,
                Self::Grpc {
                    code: tonic::Code::AlreadyExists,
                    ..
                }
            )
    }

    /// Worth retrying after a pause: the password hasher's queue is full (RESOURCE_EXHAUSTED,
    /// 429 through the gateway), a rate limit, or a moment of unavailability.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Http {
                status: 429 | 503,
                ..
            } | Self::Timeout
        ) || matches!(
            self,
            Self::Grpc {
                code: tonic::Code::ResourceExhausted | tonic::Code::Unavailable,
                ..
            }
        )
    }
}

impl Failure {
    /// How long the server asked to wait before trying again, if it said.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } | Self::Grpc { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Whole seconds, as `Retry-After` and the `retry-after` metadata carry them.
pub(crate) fn seconds(value: &str) -> Option<Duration> {
    value.trim().parse().ok().map(Duration::from_secs)
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

/// Sends calls to the shop. Generic rather than boxed: each run uses one driver throughout.
pub(crate) trait Driver: Send + Sync + 'static {
    fn call(&self, call: Call<'_>) -> impl Future<Output = Result<Reply, Failure>> + Send;
}

/// The first line of a message, at most 200 characters: enough to recognise it in a report.
pub(crate) fn brief(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}
