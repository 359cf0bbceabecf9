//! Orders, the rules on a checkout request, and the order state machine. Pure: no I/O, so every
//! rule is unit-tested here. Parsing is the validation; the store only sees values that passed.

use sha2::{Digest as _, Sha256};
use shop_common::{
    Error,
    fields::{bounded, uuid},
};
use shop_proto::{events::v1::CancelReason, order::v1 as pb};

pub(crate) const MAX_ITEMS: usize = 50;
pub(crate) const MAX_QUANTITY: i32 = 100;

/// Where an order is in its life. Stored as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    PendingPayment,
    Paid,
    Confirmed,
    Cancelled,
    Shipped,
}

/// What happened to an order; [`Status::after`] says whether it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    PaymentSucceeded,
    Confirm,
    Cancel(CancelReason),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot take {transition:?}")]
pub(crate) struct IllegalTransition {
    pub(crate) from: &'static str,
    pub(crate) transition: Transition,
}

impl Status {
    /// PENDING_PAYMENT → PAID → CONFIRMED; anything before SHIPPED may be cancelled. Shipping
    /// belongs to fulfilment, outside this system: nothing here moves an order to SHIPPED.
    pub(crate) fn after(self, transition: Transition) -> Result<Self, IllegalTransition> {
        use {Status::*, Transition::*};
        match (self, transition) {
            (PendingPayment, PaymentSucceeded) => Ok(Paid),
            (Paid, Confirm) => Ok(Confirmed),
            (PendingPayment | Paid | Confirmed, Cancel(_)) => Ok(Cancelled),
            _ => Err(IllegalTransition {
                from: self.as_str(),
                transition,
            }),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Shipped => "shipped",
        }
    }

    pub(crate) fn parse(column: &str) -> Option<Self> {
        [
            Self::PendingPayment,
            Self::Paid,
            Self::Confirmed,
            Self::Cancelled,
            Self::Shipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == column)
    }

    pub(crate) fn to_pb(self) -> pb::OrderStatus {
        match self {
            Self::PendingPayment => pb::OrderStatus::PendingPayment,
            Self::Paid => pb::OrderStatus::Paid,
            Self::Confirmed => pb::OrderStatus::Confirmed,
            Self::Cancelled => pb::OrderStatus::Cancelled,
            Self::Shipped => pb::OrderStatus::Shipped,
        }
    }

    /// `None` for UNSPECIFIED (no filter).
    pub(crate) fn from_pb(field: &str, raw: i32) -> Result<Option<Self>, Error> {
        match pb::OrderStatus::try_from(raw) {
            Ok(pb::OrderStatus::Unspecified) => Ok(None),
            Ok(pb::OrderStatus::PendingPayment) => Ok(Some(Self::PendingPayment)),
            Ok(pb::OrderStatus::Paid) => Ok(Some(Self::Paid)),
            Ok(pb::OrderStatus::Confirmed) => Ok(Some(Self::Confirmed)),
            Ok(pb::OrderStatus::Cancelled) => Ok(Some(Self::Cancelled)),
            Ok(pb::OrderStatus::Shipped) => Ok(Some(Self::Shipped)),
            Err(_) => Err(Error::invalid(
                field,
                format!("{raw} is not an order status"),
            )),
        }
    }
}

/// The words stored and shown for a cancellation.
pub(crate) fn cancel_reason_text(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::PaymentFailed => "payment_failed",
        CancelReason::CustomerRequest => "customer_request",
        CancelReason::ReservationFailed => "reservation_failed",
        CancelReason::PaymentRefunded => "payment_refunded",
        CancelReason::Unspecified => "unspecified",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub(crate) recipient: String,
    pub(crate) line1: String,
    pub(crate) line2: String,
    pub(crate) city: String,
    pub(crate) postal_code: String,
    pub(crate) country: String,
}

impl Address {
    pub(crate) fn parse(field: &str, address: Option<&pb::Address>) -> Result<Self, Error> {
        let a = address.ok_or_else(|| Error::invalid(field, "is required"))?;
        let part = |name: &str, raw: &str, min| bounded(&format!("{field}.{name}"), raw, min, 100);
        let country = a.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::invalid(
                format!("{field}.country"),
                "must be an ISO 3166-1 alpha-2 code such as \"DE\"",
            ));
        }
        Ok(Self {
            recipient: part("recipient", &a.recipient, 1)?,
            line1: part("line1", &a.line1, 1)?,
            line2: part("line2", &a.line2, 0)?,
            city: part("city", &a.city, 1)?,
            postal_code: part("postal_code", &a.postal_code, 1)?,
            country,
        })
    }

    pub(crate) fn to_pb(&self) -> pb::Address {
        pb::Address {
            recipient: self.recipient.clone(),
            line1: self.line1.clone(),
            line2: self.line2.clone(),
            city: self.city.clone(),
            postal_code: self.postal_code.clone(),
            country: self.country.clone(),
        }
    }
}

/// A requested line: which product and how many. Prices are not the client's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) product_id: String,
    pub(crate) quantity: i32,
}

/// A checkout request that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkout {
    /// Sorted by product, so the same basket in any order is the same request.
    pub(crate) items: Vec<Wanted>,
    pub(crate) address: Address,
    pub(crate) payment_method_token: String,
    pub(crate) idempotency_key: String,
}

impl Checkout {
    pub(crate) fn parse(request: &pb::PlaceOrderRequest) -> Result<Self, Error> {
        if request.items.is_empty() || request.items.len() > MAX_ITEMS {
            return Err(Error::invalid(
                "items",
                format!("must hold 1 to {MAX_ITEMS} lines"),
            ));
        }
        let mut items: Vec<Wanted> = Vec::with_capacity(request.items.len());
        for (i, item) in request.items.iter().enumerate() {
            let product_id = uuid(&format!("items[{i}].product_id"), &item.product_id)?;
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(Error::invalid(
                    format!("items[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            if items.iter().any(|w| w.product_id == product_id) {
                return Err(Error::invalid(
                    format!("items[{i}].product_id"),
                    "names a product already in the order; raise its quantity instead",
                ));
            }
            items.push(Wanted {
                product_id,
                quantity: item.quantity,
            });
        }
        items.sort_by(|a, b| a.product_id.cmp(&b.product_id));
        Ok(Self {
            items,
            address: Address::parse("shipping_address", request.shipping_address.as_ref())?,
            payment_method_token: bounded(
                "payment_method_token",
                &request.payment_method_token,
                1,
                128,
            )?,
            idempotency_key: bounded("idempotency_key", &request.idempotency_key, 1, 128)?,
        })
    }

    /// The order id of this user's key: the same key always names the same order, so
    /// concurrent retries converge on one order (and on one stock reservation).
    pub(crate) fn order_id(&self, user_id: &str) -> String {
        let name = format!("{user_id}\n{}", self.idempotency_key);
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
    }

    /// A digest of everything but the key: a reused key with a different request is refused.
    pub(crate) fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        let mut field = |value: &str| {
            hash.update(value.len().to_le_bytes());
            hash.update(value.as_bytes());
        };
        for item in &self.items {
            field(&item.product_id);
            field(&item.quantity.to_string());
        }
        let a = &self.address;
        for part in [
            &a.recipient,
            &a.line1,
            &a.line2,
            &a.city,
            &a.postal_code,
            &a.country,
        ] {
            field(part);
        }
        field(&self.payment_method_token);
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Checkout {
    /// Whether a reservation's lines (sorted by product, as reserved) are this basket.
    pub(crate) fn same_basket(&self, items: &[Item]) -> bool {
        let asked = self.items.iter().map(|w| (&w.product_id, w.quantity));
        items.iter().map(|i| (&i.product_id, i.quantity)).eq(asked)
    }
}

/// One key is one checkout: the same key with another request is refused, with this message
/// wherever the reuse is noticed (the stored order, or the reservation made under the key).
pub(crate) fn key_reused(idempotency_key: &str, order_id: &str) -> Error {
    Error::AlreadyExists(format!(
        "idempotency_key {idempotency_key:?} was used for another order ({order_id}); use a new key for a new order"
    ))
}

/// A line as ordered: with the catalogue's name and price at reservation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) product_id: String,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) quantity: i32,
    pub(crate) unit_price_minor: i64,
    pub(crate) currency: String,
}

impl Item {
    pub(crate) fn line_total(&self) -> Option<i64> {
        self.unit_price_minor.checked_mul(i64::from(self.quantity))
    }
}

/// The order total in one currency. Errors: FAILED_PRECONDITION for mixed currencies or an
/// overflowing sum (neither can be charged).
pub(crate) fn total(items: &[Item]) -> Result<(i64, String), Error> {
    let currency = items
        .first()
        .map(|i| i.currency.clone())
        .unwrap_or_default();
    let mut sum: i64 = 0;
    for item in items {
        if item.currency != currency {
            return Err(Error::FailedPrecondition(format!(
                "the order mixes {currency} and {}; order products of one currency together",
                item.currency
            )));
        }
        sum = item
            .line_total()
            .and_then(|line| sum.checked_add(line))
            .ok_or_else(|| Error::FailedPrecondition("the order total is too large".into()))?;
    }
    Ok((sum, currency))
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) idempotency_key: String,
    pub(crate) fingerprint: String,
    pub(crate) status: Status,
    pub(crate) items: Vec<Item>,
    pub(crate) total_minor: i64,
    pub(crate) currency: String,
    pub(crate) address: Address,
    pub(crate) cancel_reason: String,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
}

impl Order {
    /// This order, if `fingerprint` is the checkout it was placed with.
    pub(crate) fn placed_by(self, fingerprint: &str) -> Result<Self, Error> {
        if self.fingerprint == fingerprint {
            return Ok(self);
        }
        Err(key_reused(&self.idempotency_key, &self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Status::*;

    const EVERY_STATUS: [Status; 5] = [PendingPayment, Paid, Confirmed, Cancelled, Shipped];

    #[test]
    fn the_happy_path_is_pending_paid_confirmed() {
        let mut status = PendingPayment;
        for step in [Transition::PaymentSucceeded, Transition::Confirm] {
            status = status.after(step).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(status, Confirmed);
    }

    #[test]
    fn anything_before_shipping_may_be_cancelled_and_nothing_after() {
        let cancel = Transition::Cancel(CancelReason::CustomerRequest);
        for status in EVERY_STATUS {
            let allowed = matches!(status, PendingPayment | Paid | Confirmed);
            assert_eq!(status.after(cancel).is_ok(), allowed, "{status:?}");
        }
    }

    #[test]
    fn steps_cannot_be_skipped_or_repeated() {
        let illegal = [
            (PendingPayment, Transition::Confirm),
            (Paid, Transition::PaymentSucceeded),
            (Confirmed, Transition::PaymentSucceeded),
            (Cancelled, Transition::PaymentSucceeded),
            (Cancelled, Transition::Confirm),
            (Shipped, Transition::Confirm),
        ];
        for (status, step) in illegal {
            let error = status.after(step).err();
            assert!(error.is_some(), "{status:?} took {step:?}");
        }
    }

    #[test]
    fn statuses_round_trip_through_their_column_and_proto_names() {
        for status in EVERY_STATUS {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            let from_pb = Status::from_pb("status", status.to_pb() as i32);
            assert_eq!(from_pb.ok().flatten(), Some(status));
        }
        assert!(Status::from_pb("status", 99).is_err());
    }

    fn request() -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            items: vec![
                pb::PlaceOrderItem {
                    product_id: "b0000000-0000-4000-8000-000000000000".into(),
                    quantity: 2,
                },
                pb::PlaceOrderItem {
                    product_id: "a0000000-0000-4000-8000-000000000000".into(),
                    quantity: 1,
                },
            ],
            shipping_address: Some(pb::Address {
                recipient: "Ada Lovelace".into(),
                line1: "1 Analytical Row".into(),
                line2: String::new(),
                city: "London".into(),
                postal_code: "N1 7AA".into(),
                country: "gb".into(),
            }),
            payment_method_token: "tok_visa".into(),
            idempotency_key: "checkout-1".into(),
        }
    }

    fn refusal(request: &pb::PlaceOrderRequest) -> String {
        Checkout::parse(request)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_valid_request_is_normalised() {
        let checkout = Checkout::parse(&request()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            checkout.items[0].product_id,
            "a0000000-0000-4000-8000-000000000000"
        );
        assert_eq!(checkout.address.country, "GB");
    }

    #[test]
    fn bad_requests_name_the_field_and_the_rule() {
        type Spoil = fn(&mut pb::PlaceOrderRequest);
        let cases: [(Spoil, &str); 8] = [
            (|r| r.items.clear(), "items must hold 1 to 50 lines"),
            (
                |r| r.items[1].quantity = 0,
                "items[1].quantity must be between 1 and 100",
            ),
            (
                |r| r.items[0].quantity = 10_000,
                "items[0].quantity must be between 1 and 100",
            ),
            (
                |r| r.items[1].product_id = "nope".into(),
                "items[1].product_id must be a UUID",
            ),
            (
                |r| r.items[1].product_id = r.items[0].product_id.clone(),
                "items[1].product_id names a product already in the order",
            ),
            (
                |r| r.shipping_address = None,
                "shipping_address is required",
            ),
            (
                |r| {
                    if let Some(a) = r.shipping_address.as_mut() {
                        a.country = "Germany".into();
                    }
                },
                "shipping_address.country must be an ISO 3166-1 alpha-2 code",
            ),
            (
                |r| r.idempotency_key = " ".into(),
                "idempotency_key must be 1 to 128 characters",
            ),
        ];
        for (spoil, expected) in cases {
            let mut r = request();
            spoil(&mut r);
            let message = refusal(&r);
            assert!(message.starts_with(expected), "{message:?} vs {expected:?}");
        }
    }

    #[test]
    fn the_same_basket_in_another_order_is_the_same_request() {
        let a = Checkout::parse(&request()).unwrap_or_else(|e| panic!("{e}"));
        let mut swapped = request();
        swapped.items.reverse();
        let b = Checkout::parse(&swapped).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.order_id("u1"), b.order_id("u1"));

        let mut more = request();
        more.items[0].quantity = 3;
        let c = Checkout::parse(&more).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(
            a.order_id("u1"),
            c.order_id("u1"),
            "the key names the order"
        );
        assert_ne!(a.order_id("u1"), a.order_id("u2"), "keys are per user");
    }

    #[test]
    fn a_reservation_of_another_basket_is_a_reused_key() {
        let checkout = Checkout::parse(&request()).unwrap_or_else(|e| panic!("{e}"));
        let reserved = |quantities: [i32; 2]| -> Vec<Item> {
            checkout
                .items
                .iter()
                .zip(quantities)
                .map(|(w, quantity)| Item {
                    product_id: w.product_id.clone(),
                    quantity,
                    ..item(100, quantity, "EUR")
                })
                .collect()
        };
        assert!(checkout.same_basket(&reserved([1, 2])));
        assert!(!checkout.same_basket(&reserved([1, 3])));
        assert!(!checkout.same_basket(&reserved([1, 2])[..1]));

        let error = key_reused("checkout-1", "o-1");
        assert_eq!(error.code(), tonic::Code::AlreadyExists);
        assert!(error.to_string().contains("use a new key"), "{error}");
    }

    fn item(price: i64, quantity: i32, currency: &str) -> Item {
        Item {
            product_id: String::new(),
            sku: String::new(),
            name: String::new(),
            quantity,
            unit_price_minor: price,
            currency: currency.into(),
        }
    }

    #[test]
    fn totals_add_line_totals_in_one_currency() {
        let sum = total(&[item(1299, 2, "EUR"), item(500, 1, "EUR")]);
        assert_eq!(sum.ok(), Some((3098, "EUR".to_owned())));
        assert!(total(&[item(1, 1, "EUR"), item(1, 1, "USD")]).is_err());
        assert!(total(&[item(i64::MAX, 2, "EUR")]).is_err());
    }
}
