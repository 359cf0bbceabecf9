//! What each `shop.events.v1` message is on the bus: its event type (the routing key) and the
//! aggregate it belongs to, as constants, so a misspelt event name fails to compile.

use crate::events::v1::{
    OrderCancelled, OrderConfirmed, OrderCreated, PaymentFailed, PaymentRefunded, PaymentSucceeded,
    ProductCreated, ProductDeleted, ProductUpdated, StockReleased, StockReserved, UserDeleted,
    UserRegistered, UserSessionsRevoked,
};

/// A domain event: a protobuf message with a fixed type name and aggregate.
pub trait DomainEvent: prost::Message + Default {
    /// The event type, also its routing key: `order.created`.
    const TYPE: &'static str;
    /// The kind of thing that changed: `order`.
    const AGGREGATE: &'static str;
    /// Which one changed.
    fn aggregate_id(&self) -> &str;
}

/// One line per event: message, type, aggregate, and the field holding the aggregate's id.
macro_rules! domain_events {
    ($($message:ident => $type:literal, $aggregate:literal, $id:ident;)*) => {
        $(
            impl DomainEvent for $message {
                const TYPE: &'static str = $type;
                const AGGREGATE: &'static str = $aggregate;
                fn aggregate_id(&self) -> &str {
                    &self.$id
                }
            }
        )*
    };
}

domain_events! {
    UserRegistered => "user.registered", "user", user_id;
    UserDeleted => "user.deleted", "user", user_id;
    UserSessionsRevoked => "user.sessions_revoked", "user", user_id;
    ProductCreated => "product.created", "product", product_id;
    ProductUpdated => "product.updated", "product", product_id;
    ProductDeleted => "product.deleted", "product", product_id;
    StockReserved => "stock.reserved", "order", order_id;
    StockReleased => "stock.released", "order", order_id;
    OrderCreated => "order.created", "order", order_id;
    OrderConfirmed => "order.confirmed", "order", order_id;
    OrderCancelled => "order.cancelled", "order", order_id;
    PaymentSucceeded => "payment.succeeded", "payment", payment_id;
    PaymentFailed => "payment.failed", "payment", payment_id;
    PaymentRefunded => "payment.refunded", "payment", payment_id;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_names_its_type_after_its_comment_in_the_proto() {
        let proto = include_str!("../shop/events/v1/events.proto");
        for name in [
            UserRegistered::TYPE,
            UserDeleted::TYPE,
            UserSessionsRevoked::TYPE,
            ProductCreated::TYPE,
            ProductUpdated::TYPE,
            ProductDeleted::TYPE,
            StockReserved::TYPE,
            StockReleased::TYPE,
            OrderCreated::TYPE,
            OrderConfirmed::TYPE,
            OrderCancelled::TYPE,
            PaymentSucceeded::TYPE,
            PaymentFailed::TYPE,
            PaymentRefunded::TYPE,
        ] {
            assert!(
                proto.contains(&format!("// {name}")),
                "events.proto has no comment naming {name}"
            );
        }
    }

    #[test]
    fn the_aggregate_id_is_read_from_the_event() {
        let event = PaymentFailed {
            payment_id: "p-1".to_owned(),
            order_id: "o-1".to_owned(),
            reason: String::new(),
        };
        assert_eq!(
            (PaymentFailed::AGGREGATE, event.aggregate_id()),
            ("payment", "p-1")
        );
    }
}
