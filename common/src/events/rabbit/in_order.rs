//! A batch of events published in order without a round trip to the broker per event: every
//! message is sent first, then the confirms are awaited. The broker keeps a channel's messages
//! in the order they were sent, so consumers see them as if published one by one; the relay's
//! throughput is no longer one event per confirm (a persistent message's confirm waits for the
//! broker's disk, a few milliseconds each under load).

use tracing::Instrument as _;

use super::{EXCHANGE, PUBLISH_DEADLINE, RabbitBus, SYSTEM, message, unavailable};
use crate::events::{BusError, Envelope, InOrder, handling, metrics::events as metrics};

impl RabbitBus {
    pub(super) async fn publish_batch(&self, envelopes: &[&Envelope]) -> InOrder {
        if envelopes.is_empty() {
            // Nothing to send: no reason to need the broker (an idle relay passes often).
            return InOrder {
                confirmed: 0,
                error: None,
            };
        }
        let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
        let channel = match self.publishing_channel().await {
            Ok(channel) => channel,
            Err(error) => {
                return InOrder {
                    confirmed: 0,
                    error: Some(error),
                };
            }
        };
        let mut sent = Vec::with_capacity(envelopes.len());
        let mut error = None;
        for envelope in envelopes {
            // Each event's producer span lasts until its confirm, as a single publish's does.
            let (span, carried) = handling::publishing(SYSTEM, envelope);
            metrics()
                .published
                .with_label_values(&[envelope.event_type()])
                .inc();
            let payload = envelope.encode();
            let sending = message::send(
                &channel,
                EXCHANGE,
                envelope.event_type(),
                &payload,
                message::properties(envelope, &carried, 1, None),
            );
            match sending.instrument(span.clone()).await {
                Ok(confirm) => sent.push((envelope, span, confirm)),
                Err(failure) => {
                    error = Some(failure);
                    break;
                }
            }
        }
        let mut confirmed = 0;
        for (envelope, span, confirm) in sent {
            let answer = tokio::time::timeout_at(
                deadline,
                message::confirmed(confirm, envelope.id()).instrument(span),
            )
            .await
            .unwrap_or_else(|_| Err(unavailable("RabbitMQ did not confirm in time")));
            match answer {
                // Counted only while every earlier one was confirmed too: the rest is published
                // again by the next pass, after the one that failed.
                Ok(()) if error.is_none() => {
                    confirmed += 1;
                    metrics()
                        .confirmed
                        .with_label_values(&[envelope.event_type()])
                        .inc();
                }
                Ok(()) => {}
                Err(failure) => {
                    error.get_or_insert(failure);
                }
            }
        }
        if let Some(failure) = &error
            && !matches!(failure, BusError::NotConfirmed { .. })
        {
            // The channel or connection broke: the next publish opens another.
            self.forget_publishing_channel().await;
        }
        InOrder { confirmed, error }
    }
}
