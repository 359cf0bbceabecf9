//! What the service does with the catalogue, for the API, the `order.cancelled` consumer and
//! start-up seeding alike: products (with their optimistic versions), and stock reservations
//! that take every line or none.

use std::sync::Arc;

use shop_common::{Error, paging::Cursor};
use shop_proto::product::v1 as pb;

use crate::{
    demo,
    domain::{
        ListFilter, NewProduct, Product, ProductFields, ProductUpdate, ReservedLine, StockLine,
    },
    metrics,
    store::ProductStore,
};

pub(crate) struct Catalogue {
    pub(crate) store: Arc<dyn ProductStore>,
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("product {id}"))
}

impl Catalogue {
    /// Errors: ALREADY_EXISTS when the sku is taken.
    pub(crate) async fn create(&self, fields: ProductFields, stock: i32) -> Result<Product, Error> {
        let new = NewProduct {
            id: uuid::Uuid::new_v4().to_string(),
            fields,
            stock,
        };
        let created = self.store.create(&new).await?;
        tracing::info!(product_id = %created.id, sku = %created.fields.sku, "product created");
        Ok(created)
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Product, Error> {
        self.store.get(id).await?.ok_or_else(|| not_found(id))
    }

    /// Up to `limit` matching products after `after`, in (created_at, id) order.
    pub(crate) async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<Product>, Error> {
        self.store.list(filter, after, limit).await
    }

    /// Applies `new` (the fields `paths` name, or its non-empty ones) to the product, if it is
    /// still at `expected_version`. Errors: NOT_FOUND, ABORTED (stale version), ALREADY_EXISTS
    /// (sku taken), INVALID_ARGUMENT (a field after the merge).
    pub(crate) async fn update(
        &self,
        id: &str,
        expected_version: i64,
        new: &pb::Product,
        paths: &[String],
    ) -> Result<Product, Error> {
        let current = self.get(id).await?;
        let update = ProductUpdate::parse(&current, expected_version, new, paths)?;
        self.store.update(id, &update).await
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<(), Error> {
        if self.store.delete(id).await? {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// Takes stock for every line or none, once per order (see [`ProductStore::reserve`]).
    pub(crate) async fn reserve(
        &self,
        order_id: &str,
        lines: &[StockLine],
    ) -> Result<Vec<ReservedLine>, Error> {
        let reserved = self.store.reserve(order_id, lines).await;
        metrics::stock().reserved(&reserved);
        reserved
    }

    /// Puts a reservation's stock back; false when it held nothing (any more).
    pub(crate) async fn release(&self, order_id: &str) -> Result<bool, Error> {
        let released = self.store.release(order_id).await?;
        metrics::stock().released(released);
        Ok(released)
    }

    /// Fills an empty catalogue with the demo products; one with anything in it is left alone.
    pub(crate) async fn seed_demo(&self) -> Result<(), Error> {
        if self.store.count().await? > 0 {
            return Ok(());
        }
        let products = demo::catalogue();
        for product in &products {
            match self.store.create(product).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => {}
                Err(error) => return Err(error),
            }
        }
        tracing::info!(products = products.len(), "demo catalogue seeded");
        Ok(())
    }
}
