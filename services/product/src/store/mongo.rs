//! The catalogue on MongoDB with the official driver. Stock is taken with a conditional
//! `findAndModify` (`stock >= n` in the filter, `$inc` in the update): check and decrement are
//! one atomic step on the document, so concurrent reservations cannot oversell. A reservation of
//! several items takes them one by one and gives back what it took when one fails, so it needs
//! no multi-document transaction (and so no replica set).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::TryStreamExt as _;
use mongodb::{
    Client, Collection, IndexModel,
    bson::{Document, doc},
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};
use shop_common::{BoxFuture, Error, clock::now_ms, config::ConfigError, paging::Cursor};

use super::{
    ProductStore, not_enough_stock, rejection_from_columns, rejection_to_columns,
    reservation_released, revocations::MongoRevocations, sku_taken, stale_version,
};
use crate::domain::{
    ListFilter, NewProduct, Product, ProductFields, ProductUpdate, ReservedLine, StockLine,
};

const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProductDoc {
    #[serde(rename = "_id")]
    id: String,
    sku: String,
    name: String,
    description: String,
    category: String,
    price_minor: i64,
    currency: String,
    image_url: String,
    attributes: BTreeMap<String, String>,
    search_text: String,
    stock: i32,
    version: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl ProductDoc {
    fn new(id: &str, fields: &ProductFields, stock: i32, version: i64, created: i64) -> Self {
        Self {
            id: id.to_owned(),
            sku: fields.sku.clone(),
            name: fields.name.clone(),
            description: fields.description.clone(),
            category: fields.category.clone(),
            price_minor: fields.price_minor,
            currency: fields.currency.clone(),
            image_url: fields.image_url.clone(),
            attributes: fields.attributes.clone(),
            search_text: fields.search_text(),
            stock,
            version,
            created_at_ms: created,
            updated_at_ms: now_ms(),
        }
    }

    fn into_product(self) -> Product {
        Product {
            id: self.id,
            fields: ProductFields {
                sku: self.sku,
                name: self.name,
                description: self.description,
                category: self.category,
                price_minor: self.price_minor,
                currency: self.currency,
                image_url: self.image_url,
                attributes: self.attributes,
            },
            stock: self.stock,
            version: self.version,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LineDoc {
    product_id: String,
    sku: String,
    name: String,
    quantity: i32,
    price_minor: i64,
    currency: String,
}

/// One order's reservation; `pending` while its stock is being taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReservationDoc {
    #[serde(rename = "_id")]
    order_id: String,
    status: String,
    #[serde(default)]
    lines: Vec<LineDoc>,
    #[serde(default)]
    failure_code: Option<String>,
    #[serde(default)]
    failure_message: Option<String>,
    created_at_ms: i64,
}

pub(crate) struct MongoStore {
    products: Collection<ProductDoc>,
    reservations: Collection<ReservationDoc>,
    revocations: Arc<MongoRevocations>,
}

pub(super) fn unavailable(error: mongodb::error::Error) -> Error {
    match *error.kind {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => Error::unavailable("database", error),
        _ => Error::internal(error),
    }
}

pub(super) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

impl MongoStore {
    /// Connects (the database is the URL's path, `shop_product` without one) and creates the
    /// indexes: unique sku, and the list order with and without a category.
    /// Whether the server answers a `ping` (readiness).
    pub(crate) async fn ping(&self) -> Result<(), String> {
        self.products
            .client()
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn connect(setting: &str, url: &str) -> Result<Self, ConfigError> {
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| ConfigError::new(setting, format!("not a MongoDB URL: {e}")))?;
        options.app_name = Some(crate::NAME.to_owned());
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(3));
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| "shop_product".to_owned());
        let client = Client::with_options(options)
            .map_err(|e| ConfigError::new(setting, format!("cannot use this URL: {e}")))?;
        let db = client.database(&database);
        let store = Self {
            products: db.collection("products"),
            reservations: db.collection("reservations"),
            revocations: Arc::new(MongoRevocations::new(&db)),
        };
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "sku": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "created_at_ms": 1, "_id": 1 })
                .build(),
            IndexModel::builder()
                .keys(doc! { "category": 1, "created_at_ms": 1, "_id": 1 })
                .build(),
        ];
        store
            .products
            .create_indexes(indexes)
            .await
            .map_err(|e| ConfigError::new(setting, format!("cannot create indexes: {e}")))?;
        Ok(store)
    }

    /// The revoked sessions the auth layer refuses, kept beside the catalogue.
    pub(crate) fn revocations(&self) -> Arc<MongoRevocations> {
        self.revocations.clone()
    }

    async fn outcome(&self, order_id: &str) -> Result<Option<ReservationDoc>, Error> {
        self.reservations
            .find_one(doc! { "_id": order_id })
            .await
            .map_err(unavailable)
    }

    /// The first outcome of a reservation another call started: waits while it is pending.
    async fn first_outcome(&self, order_id: &str) -> Result<Vec<ReservedLine>, Error> {
        for _ in 0..100 {
            match self.outcome(order_id).await? {
                Some(doc) if doc.status != "pending" => return replay(doc),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Err(Error::unavailable(
            "database",
            format!("reservation {order_id} is still being made"),
        ))
    }

    async fn give_back(&self, lines: &[ReservedLine]) -> Result<(), Error> {
        for line in lines {
            self.products
                .update_one(
                    doc! { "_id": &line.product_id },
                    doc! { "$inc": { "stock": line.quantity, "version": 1_i64 },
                    "$set": { "updated_at_ms": now_ms() } },
                )
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn take(&self, lines: &[StockLine]) -> Result<Result<Vec<ReservedLine>, Error>, Error> {
        let mut taken = Vec::with_capacity(lines.len());
        for line in lines {
            let updated = self
                .products
                .find_one_and_update(
                    doc! { "_id": &line.product_id, "stock": { "$gte": line.quantity } },
                    doc! { "$inc": { "stock": -line.quantity, "version": 1_i64 },
                    "$set": { "updated_at_ms": now_ms() } },
                )
                .await
                .map_err(unavailable)?;
            let Some(product) = updated else {
                self.give_back(&taken).await?;
                let found = self
                    .products
                    .find_one(doc! { "_id": &line.product_id })
                    .await;
                return Ok(Err(match found.map_err(unavailable)? {
                    None => Error::NotFound(format!("product {}", line.product_id)),
                    Some(p) => not_enough_stock(&p.sku, &p.id, line.quantity, p.stock),
                }));
            };
            taken.push(ReservedLine {
                product_id: product.id,
                sku: product.sku,
                name: product.name,
                quantity: line.quantity,
                price_minor: product.price_minor,
                currency: product.currency,
            });
        }
        Ok(Ok(taken))
    }
}

fn replay(doc: ReservationDoc) -> Result<Vec<ReservedLine>, Error> {
    if doc.status == "released" {
        return Err(reservation_released(&doc.order_id));
    }
    if doc.status == "rejected" {
        return Err(rejection_from_columns(
            doc.failure_code.as_deref().unwrap_or_default(),
            doc.failure_message.unwrap_or_default(),
        ));
    }
    Ok(doc
        .lines
        .into_iter()
        .map(|l| ReservedLine {
            product_id: l.product_id,
            sku: l.sku,
            name: l.name,
            quantity: l.quantity,
            price_minor: l.price_minor,
            currency: l.currency,
        })
        .collect())
}

fn list_filter(filter: &ListFilter, after: Option<&Cursor>) -> Document {
    let mut query = Document::new();
    if let Some(category) = &filter.category {
        query.insert("category", category);
    }
    if let Some(text) = &filter.query {
        // Substring search, as on the SQL stores: a regex of the escaped text over the
        // lower-cased name and description.
        query.insert("search_text", doc! { "$regex": escape_regex(text) });
    }
    let mut price = Document::new();
    if let Some(min) = filter.min_price_minor {
        price.insert("$gte", min);
    }
    if let Some(max) = filter.max_price_minor {
        price.insert("$lte", max);
    }
    if !price.is_empty() {
        query.insert("price_minor", price);
    }
    if let Some(cursor) = after {
        query.insert(
            "$or",
            vec![
                doc! { "created_at_ms": { "$gt": cursor.created_at_ms } },
                doc! { "created_at_ms": cursor.created_at_ms, "_id": { "$gt": &cursor.id } },
            ],
        );
    }
    query
}

fn escape_regex(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl ProductStore for MongoStore {
    fn create<'a>(&'a self, product: &'a NewProduct) -> BoxFuture<'a, Result<Product, Error>> {
        Box::pin(async move {
            let doc = ProductDoc::new(&product.id, &product.fields, product.stock, 1, now_ms());
            match self.products.insert_one(&doc).await {
                Ok(_) => Ok(doc.into_product()),
                Err(e) if is_duplicate_key(&e) => Err(sku_taken(&product.fields.sku)),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Product>, Error>> {
        Box::pin(async move {
            let found = self.products.find_one(doc! { "_id": id }).await;
            Ok(found.map_err(unavailable)?.map(ProductDoc::into_product))
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
        after: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Product>, Error>> {
        Box::pin(async move {
            let cursor = self
                .products
                .find(list_filter(filter, after))
                .sort(doc! { "created_at_ms": 1, "_id": 1 })
                .limit(i64::from(limit))
                .await
                .map_err(unavailable)?;
            let docs: Vec<ProductDoc> = cursor.try_collect().await.map_err(unavailable)?;
            Ok(docs.into_iter().map(ProductDoc::into_product).collect())
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        update: &'a ProductUpdate,
    ) -> BoxFuture<'a, Result<Product, Error>> {
        Box::pin(async move {
            let f = &update.fields;
            let attributes: Document = f
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            let changed = self
                .products
                .find_one_and_update(
                    doc! { "_id": id, "version": update.expected_version },
                    doc! {
                        "$set": {
                            "sku": &f.sku, "name": &f.name, "description": &f.description,
                            "category": &f.category, "price_minor": f.price_minor,
                            "currency": &f.currency, "image_url": &f.image_url,
                            "attributes": attributes, "search_text": f.search_text(),
                            "stock": update.stock, "updated_at_ms": now_ms(),
                        },
                        "$inc": { "version": 1_i64 },
                    },
                )
                .return_document(ReturnDocument::After)
                .await;
            match changed {
                Ok(Some(doc)) => Ok(doc.into_product()),
                Ok(None) => match self.get(id).await? {
                    Some(_) => Err(stale_version(id, update.expected_version)),
                    None => Err(Error::NotFound(format!("product {id}"))),
                },
                Err(e) if is_duplicate_key(&e) => Err(sku_taken(&f.sku)),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let deleted = self.products.delete_one(doc! { "_id": id }).await;
            Ok(deleted.map_err(unavailable)?.deleted_count > 0)
        })
    }

    fn reserve<'a>(
        &'a self,
        order_id: &'a str,
        lines: &'a [StockLine],
    ) -> BoxFuture<'a, Result<Vec<ReservedLine>, Error>> {
        Box::pin(async move {
            // Claiming the order id first makes the reservation idempotent: whoever inserts
            // it takes the stock; everyone else waits for and returns that outcome.
            let claim = ReservationDoc {
                order_id: order_id.to_owned(),
                status: "pending".to_owned(),
                lines: Vec::new(),
                failure_code: None,
                failure_message: None,
                created_at_ms: now_ms(),
            };
            match self.reservations.insert_one(&claim).await {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => return self.first_outcome(order_id).await,
                Err(e) => return Err(unavailable(e)),
            }
            let outcome = self.take(lines).await?;
            let settled = match &outcome {
                Ok(taken) => {
                    let lines: Vec<Document> = taken
                        .iter()
                        .map(|l| {
                            doc! {
                                "product_id": &l.product_id, "sku": &l.sku, "name": &l.name,
                                "quantity": l.quantity, "price_minor": l.price_minor,
                                "currency": &l.currency,
                            }
                        })
                        .collect();
                    doc! { "$set": { "status": "reserved", "lines": lines } }
                }
                Err(error) => {
                    let (code, message) = rejection_to_columns(error);
                    doc! { "$set": { "status": "rejected", "failure_code": code,
                    "failure_message": message } }
                }
            };
            self.reservations
                .update_one(doc! { "_id": order_id }, settled)
                .await
                .map_err(unavailable)?;
            outcome
        })
    }

    fn release<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let released = self
                .reservations
                .find_one_and_update(
                    doc! { "_id": order_id, "status": "reserved" },
                    doc! { "$set": { "status": "released", "released_at_ms": now_ms() } },
                )
                .await
                .map_err(unavailable)?;
            let Some(reservation) = released else {
                return Ok(false);
            };
            let lines = replay(reservation)?;
            self.give_back(&lines).await?;
            Ok(true)
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            self.products
                .count_documents(doc! {})
                .await
                .map_err(unavailable)
        })
    }
}
