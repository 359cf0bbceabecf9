//! What the service does with the catalogue, for the API, the `order.cancelled` consumer and
//! start-up seeding alike: products (with their optimistic versions), stock reservations that
//! take every line or none, and the read cache in front of the store.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::{
    FutureExt as _,
    future::{BoxFuture, Shared, try_join_all},
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
    product_reads: Flights<String, Option<Product>>,
    /// A page's rows, with the generation of `products` the read began at.
    page_reads: Flights<PageKey, (u64, Vec<Product>)>,
}

/// A store read in progress, awaited by everyone who asked for its key meanwhile.
type Flight<V> = Shared<BoxFuture<'static, Result<V, Arc<Error>>>>;

/// Store reads in progress by key. Whoever asks for a key while its read runs waits for that
/// read instead of sending the same query: a product that many view while reservations keep
/// dropping it from the cache costs one query at a time, not one per caller (under load, the
/// callers' queries queued for the pool and kept it full). A caller joins only a read that
/// began after the key last changed.
struct Flights<K, V> {
    running: Mutex<HashMap<K, (u64, Flight<V>)>>,
}

impl<K: Eq + Hash + Clone, V: Clone + Send + Sync + 'static> Flights<K, V> {
    fn new() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The read of `key` to wait for, and whether this caller began it: the one running unless
    /// `changed_since` its start, else `read` begun now, at `generation`.
    fn join(
        &self,
        key: &K,
        generation: u64,
        changed_since: impl Fn(u64) -> bool,
        read: impl FnOnce() -> BoxFuture<'static, Result<V, Error>>,
    ) -> (Flight<V>, bool) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((started, flight)) = running.get(key)
            && !changed_since(*started)
        {
            return (flight.clone(), false);
        }
        let flight = read().map(|read| read.map_err(Arc::new)).boxed().shared();
        running.insert(key.clone(), (generation, flight.clone()));
        (flight, true)
    }

    /// Waits for `flight`, then forgets it: a later caller reads the cache, or again.
    async fn wait(&self, key: &K, flight: Flight<V>) -> Result<V, Error> {
        let outcome = flight.clone().await;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.get(key).is_some_and(|(_, f)| f.ptr_eq(&flight)) {
            running.remove(key);
        }
        outcome.map_err(|error| for_each_caller(&error))
    }
}

/// A shared read's failure, as each of its callers reports it.
fn for_each_caller(error: &Error) -> Error {
    match error {
        Error::Unavailable { dependency, source } => {
            Error::unavailable(dependency.clone(), source.to_string())
        }
        Error::NotFound(what) => Error::NotFound(what.clone()),
        other => Error::internal(format!("{other:?}")),
    }
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
                product_reads: Flights::new(),
                page_reads: Flights::new(),
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
        let key = id.to_owned();
        let generation = self.reads.products.generation();
        let (flight, began) = self.reads.product_reads.join(
            &key,
            generation,
            |started| self.reads.products.changed_since(id, started),
            || {
                let (store, id) = (self.store.clone(), key.clone());
                Box::pin(async move { store.get(&id).await })
            },
        );
        let read = self.reads.product_reads.wait(&key, flight).await?;
        let product = read.ok_or_else(|| not_found(id))?;
        if began {
            let expires = now + self.reads.ttl;
            self.reads
                .products
                .insert(key, product.clone(), expires, generation, now);
        }
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
        let rows = match self.reads.pages.get(&key, now) {
            // A product changed since is read by itself, shared with whoever reads it too.
            Some(ids) => try_join_all(ids.iter().map(|id| self.get(id))).await,
            None => self.read_page(key, filter, after, limit, now).await,
        };
        match rows {
            // Deleted by another replica since the page was read: read it again.
            Err(Error::NotFound(_)) => self.store.list(filter, after, limit).await,
            rows => rows,
        }
    }

    /// A page from the store (or the read of it running), its products as they are now.
    async fn read_page(
        &self,
        key: PageKey,
        filter: &ListFilter,
        after: Option<&Cursor>,
        limit: u32,
        now: Instant,
    ) -> Result<Vec<Product>, Error> {
        let generation = self.reads.pages.generation();
        let (flight, began) = self.reads.page_reads.join(
            &key,
            generation,
            |started| self.reads.pages.changed_since(&key, started),
            || {
                let store = self.store.clone();
                let products = self.reads.products.generation();
                let (filter, after) = (filter.clone(), after.cloned());
                Box::pin(async move {
                    let rows = store.list(&filter, after.as_ref(), limit).await?;
                    Ok((products, rows))
                })
            },
        );
        let (products, mut rows) = self.reads.page_reads.wait(&key, flight).await?;
        if began {
            let expires = now + self.reads.ttl;
            let ids = rows.iter().map(|p| p.id.clone()).collect();
            self.reads.pages.insert(key, ids, expires, generation, now);
            for row in &rows {
                let (id, row) = (row.id.clone(), row.clone());
                self.reads.products.insert(id, row, expires, products, now);
            }
        }
        // A product reserved (or released) since the page's read began shows as it is now.
        for row in &mut rows {
            if self.reads.products.changed_since(&row.id, products) {
                *row = self.get(&row.id).await?;
            }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Semaphore;

    use super::*;

    /// A read that counts itself and ends with `value` once `gate` opens.
    fn gated(
        reads: &Arc<AtomicU32>,
        gate: &Arc<Semaphore>,
        value: Result<u32, Error>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<u32, Error>> {
        let (reads, gate) = (reads.clone(), gate.clone());
        move || {
            Box::pin(async move {
                reads.fetch_add(1, Ordering::SeqCst);
                let _open = gate.acquire().await;
                value
            })
        }
    }

    /// A gate that opens when [`open`] is awaited, after the reads were started.
    fn closed() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(0))
    }

    async fn open(gate: &Semaphore) {
        tokio::task::yield_now().await;
        gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    #[tokio::test]
    async fn callers_asking_for_a_key_while_its_read_runs_share_that_read() {
        let flights: Flights<&str, u32> = Flights::new();
        let (reads, gate) = (Arc::new(AtomicU32::new(0)), closed());
        let joined: Vec<_> = (0..5)
            .map(|_| flights.join(&"p1", 0, |_| false, gated(&reads, &gate, Ok(7))))
            .collect();
        let began = joined.iter().filter(|(_, began)| *began).count();
        let waits = joined
            .into_iter()
            .map(|(flight, _)| flights.wait(&"p1", flight));
        let (outcomes, ()) = tokio::join!(futures::future::join_all(waits), open(&gate));
        assert_eq!(began, 1);
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for five callers");
        assert!(outcomes.iter().all(|o| matches!(o, Ok(7))), "{outcomes:?}");
        assert!(
            flights
                .running
                .lock()
                .map(|r| r.is_empty())
                .unwrap_or(false)
        );
    }

    #[tokio::test]
    async fn a_caller_after_a_change_does_not_join_a_read_begun_before_it() {
        let flights: Flights<&str, u32> = Flights::new();
        let (reads, gate) = (Arc::new(AtomicU32::new(0)), closed());
        let (old, began_old) = flights.join(&"p1", 3, |_| false, gated(&reads, &gate, Ok(1)));
        // The key changed at generation 4: the read begun at 3 may predate it.
        let changed = |started: u64| started < 4;
        let (new, began_new) = flights.join(&"p1", 4, changed, gated(&reads, &gate, Ok(2)));
        assert!(began_old && began_new);
        let (old, new, ()) = tokio::join!(
            flights.wait(&"p1", old),
            flights.wait(&"p1", new),
            open(&gate)
        );
        assert_eq!((old.ok(), new.ok()), (Some(1), Some(2)));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_shared_read_that_fails_fails_for_each_caller_with_its_kind() {
        let flights: Flights<&str, u32> = Flights::new();
        let (reads, gate) = (Arc::new(AtomicU32::new(0)), closed());
        let down = Err(Error::unavailable("database", "connection refused"));
        let (first, _) = flights.join(&"p1", 0, |_| false, gated(&reads, &gate, down));
        let (second, _) = flights.join(&"p1", 0, |_| false, gated(&reads, &gate, Ok(1)));
        gate.add_permits(1);
        let (first, second) = tokio::join!(flights.wait(&"p1", first), flights.wait(&"p1", second));
        for outcome in [first, second] {
            assert!(
                matches!(&outcome, Err(Error::Unavailable { dependency, .. }) if dependency == "database"),
                "{outcome:?}"
            );
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
