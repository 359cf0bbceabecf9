//! What the service does with the catalogue, for the API, the `order.cancelled` consumer and
//! start-up seeding alike: products (with their optimistic versions), stock reservations that
//! take every line or none, and the read cache in front of the store.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shop_common::{Error, cache::ExpiringCache, paging::Cursor};
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
    store: Arc<dyn ProductStore>,
    reads: Reads,
}

/// How long a read is served from memory, and how many products and pages are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadCache {
    pub(crate) ttl: Duration,
    pub(crate) size: usize,
}

/// A page of a listing: the filter, where it resumes and its size.
type PageKey = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<(i64, String)>,
    u32,
);

/// Products and listing pages as last read. Reads of a product outnumber its changes by far,
/// and each read cost a database round trip (6 times what the rest of the call cost). A change
/// made through this catalogue (create, update, delete, reservation, release) drops what it
/// touches before it returns; one made by another replica of the service shows after `ttl` at
/// most.
struct Reads {
    ttl: Duration,
    products: ExpiringCache<String, Product, Instant>,
    /// The ids on a page; their products come from `products`. Stock neither selects nor
    /// orders a page's rows, so a reservation drops products, never pages.
    pages: ExpiringCache<PageKey, Vec<String>, Instant>,
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("product {id}"))
}

impl Catalogue {
    pub(crate) fn new(store: Arc<dyn ProductStore>, cache: ReadCache) -> Self {
        // A zero time to live keeps nothing: every read goes to the store.
        let size = if cache.ttl.is_zero() { 0 } else { cache.size };
        Self {
            store,
            reads: Reads {
                ttl: cache.ttl,
                products: ExpiringCache::new(size),
                pages: ExpiringCache::new(size),
            },
        }
    }

    /// Errors: ALREADY_EXISTS when the sku is taken.
    pub(crate) async fn create(&self, fields: ProductFields, stock: i32) -> Result<Product, Error> {
        let new = NewProduct {
            id: uuid::Uuid::new_v4().to_string(),
            fields,
            stock,
        };
        let created = self.store.create(&new).await;
        self.reads.pages.clear();
        let created = created?;
        tracing::info!(product_id = %created.id, sku = %created.fields.sku, "product created");
        Ok(created)
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Product, Error> {
        let now = Instant::now();
        if let Some(product) = self.reads.products.get(id, now) {
            return Ok(product);
        }
        let generation = self.reads.products.generation();
        let product = self.store.get(id).await?.ok_or_else(|| not_found(id))?;
        self.reads.products.insert(
            product.id.clone(),
            product.clone(),
            now + self.reads.ttl,
            generation,
            now,
        );
        Ok(product)
    }

    /// Up to `limit` matching products after `after`, in (created_at, id) order.
    pub(crate) async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<Product>, Error> {
        let key = (
            filter.category.clone(),
            filter.query.clone(),
            filter.min_price_minor,
            filter.max_price_minor,
            after.map(|c| (c.created_at_ms, c.id.clone())),
            limit,
        );
        let now = Instant::now();
        if let Some(ids) = self.reads.pages.get(&key, now) {
            let cached: Option<Vec<Product>> = ids
                .iter()
                .map(|id| self.reads.products.get(id, now))
                .collect();
            // One product changed since is enough to read the page again: one query, as
            // without a cache.
            if let Some(products) = cached {
                return Ok(products);
            }
        }
        let (pages, products) = (
            self.reads.pages.generation(),
            self.reads.products.generation(),
        );
        let rows = self.store.list(filter, after, limit).await?;
        let expires = now + self.reads.ttl;
        let ids = rows.iter().map(|p| p.id.clone()).collect();
        self.reads.pages.insert(key, ids, expires, pages, now);
        for row in &rows {
            self.reads
                .products
                .insert(row.id.clone(), row.clone(), expires, products, now);
        }
        Ok(rows)
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
        // From the store: the merge must start from the version the write will check.
        let current = self.store.get(id).await?.ok_or_else(|| not_found(id))?;
        let update = ProductUpdate::parse(&current, expected_version, new, paths)?;
        let updated = self.store.update(id, &update).await;
        self.changed(id);
        updated
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<(), Error> {
        let deleted = self.store.delete(id).await;
        self.changed(id);
        if deleted? { Ok(()) } else { Err(not_found(id)) }
    }

    /// Drops what a change of product `id` may have made stale, whatever the change's outcome:
    /// a write that failed late may have committed.
    fn changed(&self, id: &str) {
        self.reads.products.remove(id);
        self.reads.pages.clear();
    }

    /// Takes stock for every line or none, once per order (see [`ProductStore::reserve`]).
    pub(crate) async fn reserve(
        &self,
        order_id: &str,
        lines: &[StockLine],
    ) -> Result<Vec<ReservedLine>, Error> {
        let reserved = self.store.reserve(order_id, lines).await;
        for line in lines {
            self.reads.products.remove(&line.product_id);
        }
        metrics::stock().reserved(&reserved);
        reserved
    }

    /// Puts a reservation's stock back; false when it held nothing (any more).
    pub(crate) async fn release(&self, order_id: &str) -> Result<bool, Error> {
        let released = self.store.release(order_id).await;
        if !matches!(released, Ok(false)) {
            // Which products got stock back is the store's to know: forget them all (pages
            // stay, see `Reads::pages`).
            self.reads.products.clear();
        }
        let released = released?;
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
        self.reads.pages.clear();
        tracing::info!(products = products.len(), "demo catalogue seeded");
        Ok(())
    }
}
