//! Stock at product-service, as this service (the `service` role): reserving a basket for an
//! order, and giving a reservation back.

use std::time::Duration;

use shop_common::client::TracedChannel;
use shop_common::{Error, auth::ServiceToken};
use shop_proto::product::v1::{
    ReleaseStockRequest, ReserveStockRequest, StockItem,
    product_service_client::ProductServiceClient,
};
use tonic::{Code, Request, Status};

use crate::domain::{Checkout, Item};

pub(crate) struct Stock {
    pub(crate) products: ProductServiceClient<TracedChannel>,
    pub(crate) service_token: ServiceToken,
    /// Deadline of each call.
    pub(crate) deadline: Duration,
}

impl Stock {
    /// A call to product-service as this service, with its deadline.
    async fn request<T>(&self, message: T) -> Result<Request<T>, Error> {
        let mut request = Request::new(message);
        request.set_timeout(self.deadline);
        self.service_token
            .authorize(&mut request)
            .await
            .map_err(|status| {
                Error::unavailable("user-service (service token)", status.to_string())
            })?;
        Ok(request)
    }

    /// Reserves the basket for `order_id` as this service; the catalogue's names and prices
    /// come back with it, sorted by product. A repeat for the same order id returns the first
    /// reservation, whatever basket it held.
    pub(crate) async fn reserve(
        &self,
        order_id: &str,
        checkout: &Checkout,
    ) -> Result<Vec<Item>, Error> {
        let request = self
            .request(ReserveStockRequest {
                order_id: order_id.to_owned(),
                items: checkout
                    .items
                    .iter()
                    .map(|w| StockItem {
                        product_id: w.product_id.clone(),
                        quantity: w.quantity,
                    })
                    .collect(),
            })
            .await?;
        let reserved = match self.products.clone().reserve_stock(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(reservation_error(&status)),
        };
        let mut items: Vec<Item> = reserved
            .items
            .into_iter()
            .map(|line| {
                let price = line.unit_price.unwrap_or_default();
                Item {
                    product_id: line.product_id,
                    sku: line.sku,
                    name: line.name,
                    quantity: line.quantity,
                    unit_price_minor: price.amount_minor,
                    currency: price.currency,
                }
            })
            .collect();
        items.sort_by(|a, b| a.product_id.cmp(&b.product_id));
        Ok(items)
    }

    /// Gives back what `order_id` holds; `false` when it held nothing.
    pub(crate) async fn release(&self, order_id: &str) -> Result<bool, Error> {
        let request = self
            .request(ReleaseStockRequest {
                order_id: order_id.to_owned(),
            })
            .await?;
        match self.products.clone().release_stock(request).await {
            Ok(response) => Ok(response.into_inner().released),
            Err(status) => Err(Error::unavailable("product-service", status.to_string())),
        }
    }
}

/// product-service's answer to a reservation, as this service's caller should see it.
fn reservation_error(status: &Status) -> Error {
    match status.code() {
        Code::FailedPrecondition => Error::FailedPrecondition(status.message().to_owned()),
        Code::NotFound => Error::NotFound(status.message().trim_end_matches(" not found").into()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Error::unavailable(
                "product-service (retry with the same idempotency_key)",
                status.to_string(),
            )
        }
        // Shed by product-service: the caller may come back when it says, with the same key.
        Code::ResourceExhausted => {
            let seconds = status
                .metadata()
                .get(shop_common::error::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            Error::exhausted(
                "product-service is busy; retry with the same idempotency_key after the time in retry-after",
                std::time::Duration::from_secs(seconds),
            )
        }
        _ => Error::internal(format!("product-service refused a reservation: {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_product_service_makes_the_checkout_busy_too_not_an_internal_error() {
        let mut shed = Status::resource_exhausted("at its limit");
        shed.metadata_mut().insert(
            shop_common::error::RETRY_AFTER,
            tonic::metadata::MetadataValue::from_static("3"),
        );
        let status = Status::from(reservation_error(&shed));
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status
                .metadata()
                .get(shop_common::error::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
}
