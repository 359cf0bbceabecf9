//! What a service puts around calls the mesh does not cover (a payment provider, user-service
//! when run without a mesh): circuit breakers, and bounded retries with jittered back-off.

mod breaker;
mod retry;

pub use breaker::{Breaker, BreakerSettings, CallError, State, is_outage};
pub use retry::{Backoff, Retry, jittered};
