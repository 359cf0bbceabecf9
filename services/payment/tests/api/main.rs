//! payment-service on a loopback port, its orders arriving on an in-process bus, charging
//! through a provider the test controls.

mod breaker;
mod helpers;
