//! The operator CLI's library, shared by the `shop` binary and the system tests: `up` runs every
//! service and the gateway in one process, `dlq` inspects and replays dead letters, `load`
//! benchmarks an HTTP endpoint, `probe` checks that services are up.

pub mod dlq;
pub mod load;
pub mod probe;
pub mod signing_key;
pub mod up;
