//! Gives back the stock of abandoned checkouts: ones where ReserveStock may have taken stock but
//! no order was written (PlaceOrder timed out, or the process died in between) and the client
//! did not retry with the same key. Runs in every replica; taking a checkout off the list is
//! atomic, so each is released once.

use std::{sync::Arc, time::Duration};

use shop_common::clock::now_ms;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{stock::Stock, store::OrderStore};

pub(crate) struct Sweeper {
    pub(crate) store: Arc<dyn OrderStore>,
    pub(crate) stock: Arc<Stock>,
    /// How old a checkout without an order must be to count as abandoned.
    pub(crate) after: Duration,
}

impl Sweeper {
    /// One pass: releases what it took off the list; a release that fails is put back on it.
    pub(crate) async fn sweep(&self) -> usize {
        let before = now_ms() - i64::try_from(self.after.as_millis()).unwrap_or(i64::MAX);
        let abandoned = match self.store.take_abandoned(before, 100).await {
            Ok(abandoned) => abandoned,
            Err(error) => {
                tracing::warn!(%error, "cannot list abandoned checkouts");
                return 0;
            }
        };
        let mut released = 0;
        for order_id in abandoned {
            match self.stock.release(&order_id).await {
                Ok(held) => {
                    released += 1;
                    tracing::info!(%order_id, held, "abandoned checkout released");
                }
                Err(error) => {
                    tracing::warn!(%order_id, %error, "cannot release an abandoned checkout; retrying later");
                    if let Err(error) = self.store.begin_checkout(&order_id).await {
                        tracing::error!(%order_id, %error, "abandoned checkout lost; its stock stays reserved");
                    }
                }
            }
        }
        released
    }

    pub(crate) fn spawn(self, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {
                        self.sweep().await;
                    }
                }
            }
        })
    }
}
