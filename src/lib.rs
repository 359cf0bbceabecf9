//! The operator CLI's library, shared by the `shop` binary and the system tests: `up` runs every
//! service and the gateway in one process, `dlq` inspects and replays dead letters.

pub mod dlq;
pub mod up;
