//! Payments and their states, and the check of an order event's amounts. Pure: no I/O.

use shop_common::Error;
use shop_proto::{events::v1::OrderCreated, payment::v1 as pb};

/// Where a payment is. Stored as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Being charged (or was, when the service stopped: the charge is retried with its key).
    Pending,
    Succeeded,
    Failed,
    Refunded,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
        }
    }

    pub(crate) fn parse(column: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed, Self::Refunded]
            .into_iter()
            .find(|s| s.as_str() == column)
    }

    pub(crate) fn to_pb(self) -> pb::PaymentStatus {
        match self {
            Self::Pending => pb::PaymentStatus::Pending,
            Self::Succeeded => pb::PaymentStatus::Succeeded,
            Self::Failed => pb::PaymentStatus::Failed,
            Self::Refunded => pb::PaymentStatus::Refunded,
        }
    }
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payment {
    pub(crate) id: String,
    pub(crate) order_id: String,
    pub(crate) user_id: String,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) status: Status,
    pub(crate) failure_reason: String,
    pub(crate) provider_reference: String,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
}

/// The amount to charge for an order: its total, once the total is checked against its lines.
/// Errors name what does not add up; such an order is never charged.
pub(crate) fn amount_due(order: &OrderCreated) -> Result<(i64, String), Error> {
    let total = order
        .total
        .as_ref()
        .ok_or_else(|| Error::invalid("total", "is missing"))?;
    if total.amount_minor <= 0 || total.currency.is_empty() {
        return Err(Error::invalid(
            "total",
            "must be a positive amount with a currency",
        ));
    }
    let mut sum: i64 = 0;
    for (i, line) in order.lines.iter().enumerate() {
        let price = line
            .unit_price
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("lines[{i}].unit_price"), "is missing"))?;
        if price.currency != total.currency {
            return Err(Error::invalid(
                format!("lines[{i}].unit_price.currency"),
                format!(
                    "is {} but the total is in {}",
                    price.currency, total.currency
                ),
            ));
        }
        sum = price
            .amount_minor
            .checked_mul(i64::from(line.quantity))
            .and_then(|line_total| sum.checked_add(line_total))
            .ok_or_else(|| Error::invalid(format!("lines[{i}]"), "overflows the total"))?;
    }
    if sum != total.amount_minor {
        return Err(Error::invalid(
            "total",
            format!("is {} but the lines add up to {sum}", total.amount_minor),
        ));
    }
    Ok((total.amount_minor, total.currency.clone()))
}

#[cfg(test)]
mod tests {
    use shop_proto::{common::v1::Money, events::v1::OrderLine};

    use super::*;

    fn order(total: i64, lines: &[(i64, i32, &str)]) -> OrderCreated {
        OrderCreated {
            total: Some(Money {
                amount_minor: total,
                currency: "EUR".into(),
            }),
            lines: lines
                .iter()
                .map(|(price, quantity, currency)| OrderLine {
                    quantity: *quantity,
                    unit_price: Some(Money {
                        amount_minor: *price,
                        currency: (*currency).into(),
                    }),
                    ..OrderLine::default()
                })
                .collect(),
            ..OrderCreated::default()
        }
    }

    fn refusal(order: &OrderCreated) -> String {
        amount_due(order)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_total_is_due_when_the_lines_add_up_to_it() {
        let due = amount_due(&order(2598 + 500, &[(1299, 2, "EUR"), (500, 1, "EUR")]));
        assert_eq!(due.ok(), Some((3098, "EUR".to_owned())));
    }

    #[test]
    fn totals_that_do_not_add_up_are_refused_naming_why() {
        assert_eq!(
            refusal(&order(3000, &[(1299, 2, "EUR")])),
            "total is 3000 but the lines add up to 2598"
        );
        assert_eq!(
            refusal(&order(100, &[(100, 1, "USD")])),
            "lines[0].unit_price.currency is USD but the total is in EUR"
        );
        assert!(refusal(&order(0, &[])).starts_with("total must be a positive amount"));
        assert!(refusal(&order(1, &[(i64::MAX, 2, "EUR")])).contains("overflows"));
    }

    #[test]
    fn statuses_round_trip_through_their_column_names() {
        for status in [
            Status::Pending,
            Status::Succeeded,
            Status::Failed,
            Status::Refunded,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("lost"), None);
    }
}
