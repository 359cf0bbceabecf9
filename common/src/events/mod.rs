//! Domain events between services: the envelope, the publisher and consumer traits, and the
//! in-process bus that `shop up` and broker-less tests use. Delivery is at least once; consumers
//! deduplicate on the event id.

mod bus;
mod envelope;
mod handling;
mod lag;
mod memory;
mod metrics;
mod ordering;
pub mod outbox;
mod rabbit;
mod topic;

pub use bus::{
    BusError, DeadLetter, EventBus, EventHandler, EventPublisher, HandlerError, InOrder,
    RetryPolicy, Subscription,
};
pub use envelope::{Envelope, EnvelopeError};
pub use lag::report_lag;
pub use memory::InProcessBus;
pub use rabbit::{EXCHANGE, RabbitBus};
