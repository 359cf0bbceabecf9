//! What the service does with money, used by the event handlers and the API alike: charge an
//! order (at most once, retrying transient failures with the same idempotency key), refund a
//! payment, settle each outcome with the event that announces it, and show payments to whom
//! they belong. Every provider call goes through the provider's circuit breaker, with a timeout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use shop_common::{
    Error,
    auth::Claims,
    clock::now_ms,
    events::Envelope,
    paging::Cursor,
    resilience::{Breaker, CallError, Retry},
};
use shop_proto::{
    common::v1::Money,
    events::v1::{OrderCreated, PaymentFailed, PaymentRefunded, PaymentSucceeded},
};

use crate::{
    NAME,
    domain::{Payment, Status, amount_due},
    metrics,
    provider::{ChargeError, PaymentProvider},
    store::{ListFilter, PaymentStore, Settle},
};

pub(crate) struct Payments {
    pub(crate) store: PaymentStore,
    pub(crate) provider: Arc<dyn PaymentProvider>,
    /// How long one provider call may take before it counts as a failure.
    pub(crate) timeout: Duration,
    /// Attempts per charge on transient failures, timeouts and an open breaker.
    pub(crate) retry: Retry,
    pub(crate) breaker: Breaker,
}

/// How the attempts at a charge ended: the provider's reference or why not, and whether any
/// of them reached the provider (the breaker refuses calls without asking it).
struct Charged {
    outcome: Result<String, String>,
    asked_provider: bool,
}

/// Why a charge failed when the provider was never asked: its breaker is open. Transient, like
/// the provider's own word for being down, so the order is cancelled as it would be after the
/// provider failed every attempt, and nothing is charged.
const PROVIDER_UNAVAILABLE: &str = "provider_unavailable";

fn money(payment: &Payment) -> Option<Money> {
    Some(Money {
        amount_minor: payment.amount_minor,
        currency: payment.currency.clone(),
    })
}

impl Payments {
    /// Charges an order once. A payment already settled is left alone (a redelivered event);
    /// one still pending (the service stopped mid-charge) is charged again with its key, which
    /// the provider treats as the same charge, and fails only on the provider's word: while
    /// its breaker refuses every call, UNAVAILABLE (the event is retried later).
    pub(crate) async fn charge_order(&self, order: &OrderCreated) -> Result<Payment, Error> {
        let due = amount_due(order);
        let (amount_minor, currency) = due.as_ref().map_or((0, String::new()), Clone::clone);
        let now = now_ms();
        let new_id = uuid::Uuid::new_v4().to_string();
        let payment = self
            .store
            .open(&Payment {
                id: new_id.clone(),
                order_id: order.order_id.clone(),
                user_id: order.user_id.clone(),
                amount_minor,
                currency,
                status: Status::Pending,
                failure_reason: String::new(),
                provider_reference: String::new(),
                created_at_ms: now,
                updated_at_ms: now,
            })
            .await?;
        if payment.status != Status::Pending {
            return Ok(payment);
        }
        // Pending before this delivery: an earlier one was charging it and stopped before it
        // settled (killed, or its database went away), so the provider may hold the charge.
        let inherited = payment.id != new_id;
        let outcome = match due {
            Ok(_) => {
                let charged = self.charge(&payment, &order.payment_method_token).await;
                if inherited && charged.outcome.is_err() && !charged.asked_provider {
                    // Only the provider can tell whether that earlier attempt charged: settling
                    // it failed on the breaker's word would cancel an order whose money was
                    // taken. It stays pending; the event comes back after a while.
                    return Err(Error::unavailable(
                        "payment provider",
                        format!(
                            "payment {} may have been charged by an earlier attempt, and the provider's circuit breaker refused every call of this one; it stays pending until the provider answers",
                            payment.id
                        ),
                    ));
                }
                charged.outcome
            }
            Err(refusal) => {
                tracing::warn!(order_id = %order.order_id, %refusal, "order amounts do not add up");
                Err("amount_mismatch".to_owned())
            }
        };
        self.settle_charge(&payment, outcome).await
    }

    /// The provider's answer after up to `retry.attempts` tries: the charge reference, or why
    /// not. Declines are final; transient failures, timeouts and an open breaker are retried
    /// with the same key after a jittered, doubling wait.
    #[tracing::instrument(
        name = "charge",
        skip_all,
        fields(otel.kind = "client", payment_id = %payment.id, amount_minor = payment.amount_minor)
    )]
    async fn charge(&self, payment: &Payment, token: &str) -> Charged {
        let asked_provider = AtomicBool::new(false);
        let outcome = self
            .retry
            .run(
                |_| self.attempt(payment, token, &asked_provider),
                ChargeError::is_transient,
            )
            .await
            .map_err(|(ChargeError::Declined(reason) | ChargeError::Transient(reason))| reason);
        Charged {
            outcome,
            asked_provider: asked_provider.into_inner(),
        }
    }

    /// One charge call through the breaker, its outcome counted; `asked_provider` is set when
    /// the breaker let it through.
    async fn attempt(
        &self,
        payment: &Payment,
        token: &str,
        asked_provider: &AtomicBool,
    ) -> Result<String, ChargeError> {
        let call = async {
            asked_provider.store(true, Ordering::Relaxed);
            let charge =
                self.provider
                    .charge(&payment.id, payment.amount_minor, &payment.currency, token);
            let (outcome, result) = match tokio::time::timeout(self.timeout, charge).await {
                Ok(Ok(reference)) => ("approved", Ok(reference)),
                Ok(Err(declined @ ChargeError::Declined(_))) => ("declined", Err(declined)),
                Ok(Err(transient @ ChargeError::Transient(_))) => ("transient", Err(transient)),
                Err(_) => (
                    "timeout",
                    Err(ChargeError::Transient("provider_timeout".to_owned())),
                ),
            };
            metrics::payments().attempt(outcome);
            result
        };
        self.breaker
            .call(call, ChargeError::is_transient)
            .await
            .map_err(|error| match error {
                CallError::Failed(error) => error,
                CallError::Open(_) => ChargeError::Transient(PROVIDER_UNAVAILABLE.to_owned()),
            })
    }

    async fn settle_charge(
        &self,
        payment: &Payment,
        outcome: Result<String, String>,
    ) -> Result<Payment, Error> {
        let (to, reason, reference, event) = match &outcome {
            Ok(reference) => {
                let event = PaymentSucceeded {
                    payment_id: payment.id.clone(),
                    order_id: payment.order_id.clone(),
                    amount: money(payment),
                };
                (
                    Status::Succeeded,
                    "",
                    reference.as_str(),
                    Envelope::new(NAME, &event),
                )
            }
            Err(reason) => {
                let event = PaymentFailed {
                    payment_id: payment.id.clone(),
                    order_id: payment.order_id.clone(),
                    reason: reason.clone(),
                };
                (
                    Status::Failed,
                    reason.as_str(),
                    "",
                    Envelope::new(NAME, &event),
                )
            }
        };
        let settle = Settle {
            from: Status::Pending,
            to,
            failure_reason: reason,
            provider_reference: reference,
            event: Some(event),
        };
        match self.store.settle(&payment.id, settle).await? {
            Some(settled) => {
                tracing::info!(payment_id = %settled.id, order_id = %settled.order_id, status = settled.status.as_str(), "payment settled");
                metrics::payments().settled(&settled);
                Ok(settled)
            }
            // Settled by a concurrent delivery of the same event.
            None => self.current(&payment.id).await,
        }
    }

    async fn current(&self, payment_id: &str) -> Result<Payment, Error> {
        self.store
            .get(payment_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("payment {payment_id}")))
    }

    /// The payment `id` if the caller may see it: the payer or an admin. To anyone else it
    /// does not exist.
    pub(crate) async fn visible(&self, caller: &Claims, id: &str) -> Result<Payment, Error> {
        self.store
            .get(id)
            .await?
            .filter(|p| caller.may_see(&p.user_id))
            .ok_or_else(|| Error::NotFound(format!("payment {id}")))
    }

    /// Up to `limit` of the caller's payments after `after`, newest first, of one order if
    /// given; an admin asking for `all_users` sees everyone's.
    pub(crate) async fn list(
        &self,
        caller: &Claims,
        all_users: bool,
        order_id: Option<String>,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<Payment>, Error> {
        let filter = ListFilter {
            user_id: caller.list_scope(all_users),
            order_id,
        };
        self.store.list(&filter, after, limit).await
    }

    /// An admin's refund of payment `id`, with the reason they gave.
    pub(crate) async fn refund_by_id(&self, id: &str, reason: &str) -> Result<Payment, Error> {
        let payment = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
        let refunded = self.refund(&payment).await?;
        tracing::info!(payment_id = %id, %reason, "refund requested by an admin");
        Ok(refunded)
    }

    /// Refunds a succeeded payment (again: a no-op). Errors: FAILED_PRECONDITION when it never
    /// succeeded, UNAVAILABLE when the provider does not answer.
    pub(crate) async fn refund(&self, payment: &Payment) -> Result<Payment, Error> {
        match payment.status {
            Status::Refunded => return Ok(payment.clone()),
            Status::Succeeded => {}
            Status::Pending | Status::Failed => {
                return Err(Error::FailedPrecondition(format!(
                    "payment {} is {} and has nothing to refund",
                    payment.id,
                    payment.status.as_str()
                )));
            }
        }
        let call = async {
            let refund = self.provider.refund(&payment.provider_reference);
            tokio::time::timeout(self.timeout, refund)
                .await
                .unwrap_or_else(|_| Err(ChargeError::Transient("refund timed out".to_owned())))
        };
        self.breaker
            .call(call, ChargeError::is_transient)
            .await
            .map_err(|error| Error::unavailable("payment provider", error.to_string()))?;
        let event = PaymentRefunded {
            payment_id: payment.id.clone(),
            order_id: payment.order_id.clone(),
            amount: money(payment),
        };
        let settle = Settle {
            from: Status::Succeeded,
            to: Status::Refunded,
            failure_reason: "",
            provider_reference: &payment.provider_reference,
            event: Some(Envelope::new(NAME, &event)),
        };
        match self.store.settle(&payment.id, settle).await? {
            Some(refunded) => {
                tracing::info!(payment_id = %refunded.id, order_id = %refunded.order_id, "payment refunded");
                metrics::payments().settled(&refunded);
                Ok(refunded)
            }
            None => self.current(&payment.id).await,
        }
    }

    /// An order was cancelled: refund its payment if it was taken; if none was made yet, record
    /// one that failed, so a late `order.created` charges nothing.
    pub(crate) async fn cancel_order(&self, order_id: &str, user_id: &str) -> Result<(), Error> {
        let now = now_ms();
        let payment = self
            .store
            .open(&Payment {
                id: uuid::Uuid::new_v4().to_string(),
                order_id: order_id.to_owned(),
                user_id: user_id.to_owned(),
                amount_minor: 0,
                currency: String::new(),
                status: Status::Failed,
                failure_reason: "order_cancelled".to_owned(),
                provider_reference: String::new(),
                created_at_ms: now,
                updated_at_ms: now,
            })
            .await?;
        match payment.status {
            Status::Succeeded => self.refund(&payment).await.map(|_| ()),
            // A charge is in flight: decide once it settled.
            Status::Pending => Err(Error::unavailable(
                "payment settlement",
                format!("payment {} is still being charged", payment.id),
            )),
            Status::Failed | Status::Refunded => Ok(()),
        }
    }
}
