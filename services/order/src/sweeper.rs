//! Gives back the stock of abandoned checkouts: ones where ReserveStock may have taken stock but
//! no order was written (PlaceOrder timed out, or the process died in between) and the client
//! did not retry with the same key. Runs in every replica; taking a checkout off the list is
//! atomic, so each is released once.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::orders::Orders;

/// Every `every`, releases the checkouts older than `after` that made no order (and counts the
/// orders waiting for their payment), until `stop`.
pub(crate) async fn run(
    orders: Arc<Orders>,
    after: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                orders.release_abandoned(after).await;
                orders.report_pending().await;
            }
        }
    }
}
