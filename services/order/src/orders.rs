//! What the service does with orders, for the API, the payment-outcome events and the sweeper
//! alike: the checkout (reserve stock, then write the order with `order.created`), who sees
//! which order, cancellation, the moves a payment outcome causes, and giving back the stock of
//! abandoned checkouts.

use std::time::Duration;

use shop_common::{Error, auth::Claims, clock::now_ms, events::Envelope, paging::Cursor};
use shop_proto::{
    common::v1::Money,
    events::v1::{CancelReason, OrderCancelled, OrderConfirmed, OrderCreated, OrderLine},
};

use crate::{
    NAME,
    domain::{Checkout, Order, Status, Transition, cancel_reason_text, key_reused, total},
    metrics,
    stock::Stock,
    store::{Applying, Change, Changed, Decide, ListFilter, OrderStore, Placed},
};

pub(crate) struct Orders {
    pub(crate) store: OrderStore,
    pub(crate) stock: Stock,
}

pub(crate) fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

/// The change to CANCELLED for `reason`, with its `order.cancelled` event.
fn cancellation(order: &Order, reason: CancelReason, detail: &str) -> Change {
    let event = OrderCancelled {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
        reason: reason.into(),
        detail: detail.to_owned(),
    };
    Change {
        status: Status::Cancelled,
        cancel_reason: cancel_reason_text(reason).to_owned(),
        events: vec![Envelope::new(NAME, &event)],
    }
}

/// Cancels the order for `reason` when its status allows it (`only_from` lists the statuses
/// the cause makes sense in).
fn cancel_from(
    order: &Order,
    reason: CancelReason,
    detail: &str,
    only_from: &[Status],
) -> Option<Change> {
    (only_from.contains(&order.status) && order.status.after(Transition::Cancel(reason)).is_ok())
        .then(|| cancellation(order, reason, detail))
}

/// Paid, and so confirmed: stock is already held, so nothing else stands in the way.
fn confirm(order: &Order) -> Result<Option<Change>, Error> {
    let Ok(paid) = order.status.after(Transition::PaymentSucceeded) else {
        // Cancelled meanwhile (payment-service refunds on `order.cancelled`), or a repeat.
        return Ok(None);
    };
    let status = paid
        .after(Transition::Confirm)
        .map_err(|e| Error::internal(e.to_string()))?;
    let event = OrderConfirmed {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
    };
    Ok(Some(Change {
        status,
        cancel_reason: String::new(),
        events: vec![Envelope::new(NAME, &event)],
    }))
}

fn created_event(order: &Order, payment_method_token: &str) -> OrderCreated {
    OrderCreated {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
        lines: order
            .items
            .iter()
            .map(|item| OrderLine {
                product_id: item.product_id.clone(),
                sku: item.sku.clone(),
                quantity: item.quantity,
                unit_price: money(item.unit_price_minor, &item.currency),
            })
            .collect(),
        total: money(order.total_minor, &order.currency),
        payment_method_token: payment_method_token.to_owned(),
    }
}

impl Orders {
    /// The checkout of `user_id`: the order its key names, placed once. Stock is reserved at
    /// product-service first (its names and prices are all the order uses), then the order and
    /// `order.created` are written in one transaction. A retry with the same key gets the same
    /// order; the same key with another basket is refused.
    #[tracing::instrument(skip_all, fields(order_id))]
    pub(crate) async fn place(&self, user_id: &str, checkout: &Checkout) -> Result<Order, Error> {
        let order_id = checkout.order_id(user_id);
        tracing::Span::current().record("order_id", order_id.as_str());
        let fingerprint = checkout.fingerprint();
        // A repeat finds its order; a retry of a checkout still under way carries on with it.
        if !self.store.begin_checkout(&order_id).await?
            && let Some(existing) = self.store.get(&order_id).await?
        {
            return existing.placed_by(&fingerprint);
        }
        let items = match self.stock.reserve(&order_id, checkout).await {
            Ok(items) => items,
            Err(error) => {
                // Refused: nothing is held. Anything else (no answer) may hold stock: the
                // checkout stays for a retry with the same key, or for the sweeper.
                if matches!(error, Error::FailedPrecondition(_) | Error::NotFound(_)) {
                    self.store.end_checkout(&order_id).await?;
                }
                return Err(error);
            }
        };
        if !checkout.same_basket(&items) {
            // The order id was reserved first by another request under the same key.
            return Err(key_reused(&checkout.idempotency_key, &order_id));
        }
        let (total_minor, currency) = match total(&items) {
            Ok(total) => total,
            Err(refusal) => {
                if self.stock.release(&order_id).await.is_ok() {
                    self.store.end_checkout(&order_id).await?;
                }
                return Err(refusal);
            }
        };
        let now = now_ms();
        let order = Order {
            id: order_id,
            user_id: user_id.to_owned(),
            idempotency_key: checkout.idempotency_key.clone(),
            fingerprint: fingerprint.clone(),
            status: Status::PendingPayment,
            items,
            total_minor,
            currency,
            address: checkout.address.clone(),
            cancel_reason: String::new(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let event = Envelope::new(NAME, &created_event(&order, &checkout.payment_method_token));
        match self.store.place(&order, &event).await? {
            Placed::New(order) => {
                tracing::info!(total_minor = order.total_minor, "order placed");
                metrics::orders().placed();
                Ok(order)
            }
            Placed::Existing(existing) => existing.placed_by(&fingerprint),
        }
    }

    /// The order `id` if the caller may see it: its owner or an admin. To anyone else it does
    /// not exist.
    pub(crate) async fn visible(&self, caller: &Claims, id: &str) -> Result<Order, Error> {
        self.store
            .get(id)
            .await?
            .filter(|o| caller.may_see(&o.user_id))
            .ok_or_else(|| Error::NotFound(format!("order {id}")))
    }

    /// Up to `limit` of the caller's orders after `after`, newest first, of one status if
    /// given; an admin asking for `all_users` sees everyone's.
    pub(crate) async fn list(
        &self,
        caller: &Claims,
        all_users: bool,
        status: Option<Status>,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<Order>, Error> {
        let filter = ListFilter {
            user_id: caller.list_scope(all_users),
            status,
        };
        self.store.list(&filter, after, limit).await
    }

    /// The customer's cancellation. Errors: FAILED_PRECONDITION once the order shipped.
    pub(crate) async fn cancel(
        &self,
        caller: &Claims,
        id: &str,
        detail: &str,
    ) -> Result<Order, Error> {
        self.visible(caller, id).await?;
        let decide = |order: &Order| -> Result<Option<Change>, Error> {
            let reason = CancelReason::CustomerRequest;
            order
                .status
                .after(Transition::Cancel(reason))
                .map_err(|_| {
                    Error::FailedPrecondition(format!(
                        "order {} is {} and can no longer be cancelled",
                        order.id,
                        order.status.as_str().replace('_', " ")
                    ))
                })?;
            Ok(Some(cancellation(order, reason, detail)))
        };
        match self.change(id, None, &decide).await? {
            Changed::Applied(order) | Changed::Unchanged(order) => {
                tracing::info!("order cancelled by request");
                Ok(order)
            }
            Changed::Missing | Changed::Duplicate => Err(Error::NotFound(format!("order {id}"))),
        }
    }

    /// `payment.succeeded`: the order is paid and confirmed, unless it was cancelled meanwhile.
    pub(crate) async fn payment_succeeded(
        &self,
        event: Applying<'_>,
        order_id: &str,
    ) -> Result<Changed, Error> {
        self.change(order_id, Some(event), &confirm).await
    }

    /// `payment.failed`: an order still waiting for its payment is cancelled.
    pub(crate) async fn payment_failed(
        &self,
        event: Applying<'_>,
        order_id: &str,
        reason: &str,
    ) -> Result<Changed, Error> {
        let decide = |order: &Order| {
            Ok(cancel_from(
                order,
                CancelReason::PaymentFailed,
                reason,
                &[Status::PendingPayment],
            ))
        };
        self.change(order_id, Some(event), &decide).await
    }

    /// `payment.refunded` (an admin's refund): a paid order is cancelled.
    pub(crate) async fn payment_refunded(
        &self,
        event: Applying<'_>,
        order_id: &str,
    ) -> Result<Changed, Error> {
        let decide = |order: &Order| {
            Ok(cancel_from(
                order,
                CancelReason::PaymentRefunded,
                "the payment was refunded",
                &[Status::Paid, Status::Confirmed],
            ))
        };
        self.change(order_id, Some(event), &decide).await
    }

    /// A change of an order, counted in the saga metrics when it ends the order.
    async fn change(
        &self,
        order_id: &str,
        applying: Option<Applying<'_>>,
        decide: &Decide<'_>,
    ) -> Result<Changed, Error> {
        let changed = self.store.change(order_id, applying, decide).await?;
        if let Changed::Applied(order) = &changed {
            metrics::orders().moved(order);
        }
        Ok(changed)
    }

    /// Counts the orders waiting for their payment, for `orders_pending_payment`.
    pub(crate) async fn report_pending(&self) {
        match self.store.pending_payment().await {
            Ok((count, oldest)) => metrics::orders().pending(count, oldest),
            Err(error) => tracing::warn!(%error, "cannot count orders pending payment"),
        }
    }

    /// Gives back the stock of checkouts older than `after` that made no order; a release that
    /// fails is put back on the list for the next pass. Returns how many were released.
    pub(crate) async fn release_abandoned(&self, after: Duration) -> usize {
        let before = now_ms() - i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
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
}
