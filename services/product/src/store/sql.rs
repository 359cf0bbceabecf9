//! The catalogue in SQL, one text for PostgreSQL and SQLite except where PostgreSQL does in one
//! statement what SQLite does in several (a one-line reservation). Stock is taken with
//! `UPDATE … WHERE stock >= $n`: the row lock (PostgreSQL) or the single writer (SQLite,
//! `BEGIN IMMEDIATE`) makes check and decrement one step, so stock never goes negative.

use shop_common::{
    BoxFuture, Error,
    clock::now_ms,
    paging::Cursor,
    storage::{Backend, Db, is_unique_violation},
};
use sqlx::{
    Any, AnyConnection, Row as _,
    any::{AnyArguments, AnyRow},
    query::Query,
};

use super::{
    ProductStore, not_enough_stock, rejection_from_columns, rejection_to_columns,
    reservation_released, sku_taken, stale_version,
};
use crate::domain::{
    ListFilter, NewProduct, Product, ProductFields, ProductUpdate, ReservedLine, StockLine,
};

/// The columns of a [`Product`], spliced into statements at compile time.
macro_rules! product_columns {
    () => {
        "product_id, sku, name, description, category, price_minor, currency, image_url,
         attributes, stock, version, created_at_ms, updated_at_ms"
    };
}

/// `%text%` for LIKE, with the wildcards of the text itself escaped.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Binds the fields a client sets, in the order both writing statements list them.
fn bind_fields<'q>(
    query: Query<'q, Any, AnyArguments>,
    f: &'q ProductFields,
) -> Result<Query<'q, Any, AnyArguments>, Error> {
    let attributes = serde_json::to_string(&f.attributes).map_err(Error::internal)?;
    Ok(query
        .bind(&f.sku)
        .bind(&f.name)
        .bind(&f.description)
        .bind(&f.category)
        .bind(f.price_minor)
        .bind(&f.currency)
        .bind(&f.image_url)
        .bind(attributes)
        .bind(f.search_text()))
}

fn sku_taken_or(error: sqlx::Error, sku: &str) -> Error {
    if is_unique_violation(&error) {
        sku_taken(sku)
    } else {
        error.into()
    }
}

pub(crate) struct SqlStore {
    db: Db,
}

impl SqlStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    fn product(row: &AnyRow) -> Result<Product, Error> {
        let attributes: String = row.try_get("attributes")?;
        Ok(Product {
            id: row.try_get("product_id")?,
            fields: ProductFields {
                sku: row.try_get("sku")?,
                name: row.try_get("name")?,
                description: row.try_get("description")?,
                category: row.try_get("category")?,
                price_minor: row.try_get("price_minor")?,
                currency: row.try_get("currency")?,
                image_url: row.try_get("image_url")?,
                attributes: serde_json::from_str(&attributes).map_err(Error::internal)?,
            },
            stock: row.try_get("stock")?,
            version: row.try_get("version")?,
            created_at_ms: row.try_get("created_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        })
    }

    /// The stored outcome of `order_id`'s reservation, if it has one.
    async fn outcome(
        conn: &mut AnyConnection,
        order_id: &str,
    ) -> Result<Option<Result<Vec<ReservedLine>, Error>>, Error> {
        let Some(row) = sqlx::query(
            "SELECT status, failure_code, failure_message FROM reservations
             WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let status: String = row.try_get("status")?;
        if status == "released" {
            return Ok(Some(Err(reservation_released(order_id))));
        }
        if status == "rejected" {
            let code: Option<String> = row.try_get("failure_code")?;
            let message: Option<String> = row.try_get("failure_message")?;
            return Ok(Some(Err(rejection_from_columns(
                code.as_deref().unwrap_or_default(),
                message.unwrap_or_default(),
            ))));
        }
        let rows = sqlx::query(
            "SELECT product_id, sku, name, quantity, price_minor, currency
             FROM reservation_items WHERE order_id = $1 ORDER BY product_id",
        )
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await?;
        let lines = rows
            .iter()
            .map(|row| {
                Ok(ReservedLine {
                    product_id: row.try_get("product_id")?,
                    sku: row.try_get("sku")?,
                    name: row.try_get("name")?,
                    quantity: row.try_get("quantity")?,
                    price_minor: row.try_get("price_minor")?,
                    currency: row.try_get("currency")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(Ok(lines)))
    }

    /// `line` as reserved, with the product's sku, name and price from the row that took it.
    fn reserved(line: &StockLine, row: &AnyRow) -> Result<ReservedLine, sqlx::Error> {
        Ok(ReservedLine {
            product_id: line.product_id.clone(),
            sku: row.try_get("sku")?,
            name: row.try_get("name")?,
            quantity: line.quantity,
            price_minor: row.try_get("price_minor")?,
            currency: row.try_get("currency")?,
        })
    }

    /// Takes every line's stock inside `tx`; the first line that cannot be served
    /// stops it with the error to remember.
    async fn take(
        tx: &mut AnyConnection,
        lines: &[StockLine],
    ) -> Result<Result<Vec<ReservedLine>, Error>, Error> {
        let now = now_ms();
        let mut reserved = Vec::with_capacity(lines.len());
        for line in lines {
            let taken = sqlx::query(
                "UPDATE products SET stock = stock - $2, version = version + 1,
                     updated_at_ms = $3
                 WHERE product_id = $1 AND stock >= $2
                 RETURNING sku, name, price_minor, currency",
            )
            .bind(&line.product_id)
            .bind(line.quantity)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = taken else {
                let found = sqlx::query("SELECT sku, stock FROM products WHERE product_id = $1")
                    .bind(&line.product_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Ok(Err(match found {
                    None => Error::NotFound(format!("product {}", line.product_id)),
                    Some(row) => not_enough_stock(
                        &row.try_get::<String, _>("sku")?,
                        &line.product_id,
                        line.quantity,
                        row.try_get("stock")?,
                    ),
                }));
            };
            reserved.push(Self::reserved(line, &row)?);
        }
        Ok(Ok(reserved))
    }

    /// Claims `order_id`'s reservation with `status` (and why, for a rejection); false when it
    /// has one already, or a concurrent call for the same order took it first.
    async fn claim(
        tx: &mut AnyConnection,
        order_id: &str,
        status: &str,
        failure: Option<(&str, String)>,
    ) -> Result<bool, Error> {
        let (code, message) = failure.unzip();
        let inserted = sqlx::query(
            "INSERT INTO reservations (order_id, status, failure_code, failure_message,
                 created_at_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(order_id)
        .bind(status)
        .bind(code)
        .bind(message)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The lines a claimed reservation holds.
    async fn record_lines(
        tx: &mut AnyConnection,
        order_id: &str,
        lines: &[ReservedLine],
    ) -> Result<(), Error> {
        for line in lines {
            sqlx::query(
                "INSERT INTO reservation_items (order_id, product_id, sku, name, quantity,
                     price_minor, currency)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(order_id)
            .bind(&line.product_id)
            .bind(&line.sku)
            .bind(&line.name)
            .bind(line.quantity)
            .bind(line.price_minor)
            .bind(&line.currency)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// PostgreSQL's one-line reservation: the stock, the claim and the line in one statement
    /// (the `WITH` clauses) and its own transaction: one round trip where one statement at a
    /// time takes five, on PlaceOrder's critical path. The stock is taken first and the claim
    /// written only from what was taken, so a statement that takes nothing writes nothing and
    /// needs no rollback. `None` when it took nothing (no stock, no product, or this order was
    /// reserved before): the line-by-line path finds out which and answers or remembers it.
    /// A concurrent call for the same order that took the stock first makes this claim a
    /// duplicate key: the whole statement is undone and the line-by-line path reads the
    /// winner's outcome (against that path's own call for the same order, which claims first,
    /// the two may deadlock: PostgreSQL then fails one, which a retry gets past). Several lines
    /// keep that path, which locks the products in the lines' order; one UPDATE over several
    /// rows would lock them in whatever order its plan picks, and two such reservations could
    /// deadlock.
    async fn reserve_one_line(
        &self,
        order_id: &str,
        line: &StockLine,
    ) -> Result<Option<Vec<ReservedLine>>, Error> {
        let taken = sqlx::query(
            "WITH taken AS (
                 UPDATE products SET stock = stock - $3, version = version + 1,
                     updated_at_ms = $4
                 WHERE product_id = $2 AND stock >= $3
                     AND NOT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)
                 RETURNING sku, name, price_minor, currency),
             claimed AS (
                 INSERT INTO reservations (order_id, status, created_at_ms)
                 SELECT $1, 'reserved', $4 FROM taken),
             recorded AS (
                 INSERT INTO reservation_items (order_id, product_id, sku, name, quantity,
                     price_minor, currency)
                 SELECT $1, $2, sku, name, $3, price_minor, currency FROM taken)
             SELECT sku, name, price_minor, currency FROM taken",
        )
        .bind(order_id)
        .bind(&line.product_id)
        .bind(line.quantity)
        .bind(now_ms())
        .fetch_optional(self.db.pool())
        .await;
        match taken {
            Ok(Some(row)) => Ok(Some(vec![Self::reserved(line, &row)?])),
            Ok(None) => Ok(None),
            Err(error) if is_unique_violation(&error) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Claims the reservation, then takes and records the lines one statement at a time.
    async fn reserve_line_by_line(
        &self,
        order_id: &str,
        lines: &[StockLine],
    ) -> Result<Vec<ReservedLine>, Error> {
        // The reservation row first: a repeat (or a concurrent call, which waits on the
        // row until this one ends) reads the first outcome instead of taking stock again.
        let mut tx = self.db.begin().await?;
        if !Self::claim(&mut tx, order_id, "reserved", None).await? {
            tx.rollback().await?;
            return self.stored_outcome(order_id).await;
        }
        match Self::take(&mut tx, lines).await? {
            Ok(reserved) => {
                Self::record_lines(&mut tx, order_id, &reserved).await?;
                tx.commit().await?;
                Ok(reserved)
            }
            Err(rejection) => {
                // Nothing taken stays taken; the rejection is remembered on its own.
                tx.rollback().await?;
                let mut tx = self.db.begin().await?;
                let failure = rejection_to_columns(&rejection);
                if !Self::claim(&mut tx, order_id, "rejected", Some(failure)).await? {
                    tx.rollback().await?;
                    return self.stored_outcome(order_id).await;
                }
                tx.commit().await?;
                Err(rejection)
            }
        }
    }

    /// The outcome a concurrent or earlier call for `order_id` stored.
    async fn stored_outcome(&self, order_id: &str) -> Result<Vec<ReservedLine>, Error> {
        let mut conn = self.db.pool().acquire().await?;
        Self::outcome(&mut conn, order_id)
            .await?
            .unwrap_or_else(|| Err(Error::internal("reservation vanished")))
    }
}

impl ProductStore for SqlStore {
    fn create<'a>(&'a self, product: &'a NewProduct) -> BoxFuture<'a, Result<Product, Error>> {
        Box::pin(async move {
            let f = &product.fields;
            let now = now_ms();
            let query = sqlx::query(concat!(
                "INSERT INTO products (product_id, sku, name, description, category,
                     price_minor, currency, image_url, attributes, search_text, stock,
                     version, created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12)
                 RETURNING ",
                product_columns!()
            ))
            .bind(&product.id);
            let row = bind_fields(query, f)?
                .bind(product.stock)
                .bind(now)
                .fetch_one(self.db.pool())
                .await
                .map_err(|e| sku_taken_or(e, &f.sku))?;
            Self::product(&row)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Product>, Error>> {
        Box::pin(async move {
            let row = sqlx::query(concat!(
                "SELECT ",
                product_columns!(),
                " FROM products WHERE product_id = $1"
            ))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
            row.as_ref().map(Self::product).transpose()
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
        after: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Product>, Error>> {
        Box::pin(async move {
            let (at, id) = Cursor::bounds(after);
            // Empty strings and zeros stand for "no filter", so one statement serves
            // every combination without NULL typing trouble.
            let rows = sqlx::query(concat!(
                "SELECT ",
                product_columns!(),
                " FROM products
                 WHERE ($1 = '' OR category = $1)
                   AND ($2 = '' OR search_text LIKE $2 ESCAPE '\\')
                   AND (CAST($3 AS BIGINT) = 0 OR price_minor >= $3)
                   AND (CAST($4 AS BIGINT) = 0 OR price_minor <= $4)
                   AND (created_at_ms > $5 OR (created_at_ms = $5 AND product_id > $6))
                 ORDER BY created_at_ms, product_id LIMIT $7"
            ))
            .bind(filter.category.clone().unwrap_or_default())
            .bind(
                filter
                    .query
                    .as_deref()
                    .map(like_pattern)
                    .unwrap_or_default(),
            )
            .bind(filter.min_price_minor.unwrap_or(0))
            .bind(filter.max_price_minor.unwrap_or(0))
            .bind(at)
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
            rows.iter().map(Self::product).collect()
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        update: &'a ProductUpdate,
    ) -> BoxFuture<'a, Result<Product, Error>> {
        Box::pin(async move {
            let f = &update.fields;
            let query = sqlx::query(concat!(
                "UPDATE products SET sku = $3, name = $4, description = $5, category = $6,
                     price_minor = $7, currency = $8, image_url = $9, attributes = $10,
                     search_text = $11, stock = $12, version = version + 1,
                     updated_at_ms = $13
                 WHERE product_id = $1 AND version = $2
                 RETURNING ",
                product_columns!()
            ))
            .bind(id)
            .bind(update.expected_version);
            let row = bind_fields(query, f)?
                .bind(update.stock)
                .bind(now_ms())
                .fetch_optional(self.db.pool())
                .await
                .map_err(|e| sku_taken_or(e, &f.sku))?;
            match row {
                Some(row) => Self::product(&row),
                None => match self.get(id).await? {
                    Some(_) => Err(stale_version(id, update.expected_version)),
                    None => Err(Error::NotFound(format!("product {id}"))),
                },
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let deleted = sqlx::query("DELETE FROM products WHERE product_id = $1")
                .bind(id)
                .execute(self.db.pool())
                .await?
                .rows_affected();
            Ok(deleted > 0)
        })
    }

    fn reserve<'a>(
        &'a self,
        order_id: &'a str,
        lines: &'a [StockLine],
    ) -> BoxFuture<'a, Result<Vec<ReservedLine>, Error>> {
        Box::pin(async move {
            if let [line] = lines
                && self.db.backend() == Backend::Postgres
                && let Some(reserved) = self.reserve_one_line(order_id, line).await?
            {
                return Ok(reserved);
            }
            self.reserve_line_by_line(order_id, lines).await
        })
    }

    fn release<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let now = now_ms();
            let mut tx = self.db.begin().await?;
            let released = sqlx::query(
                "UPDATE reservations SET status = 'released', released_at_ms = $2
                 WHERE order_id = $1 AND status = 'reserved'",
            )
            .bind(order_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if released == 0 {
                return Ok(false);
            }
            // A product deleted since simply has no stock to get back.
            sqlx::query(
                "UPDATE products SET stock = stock + (
                         SELECT quantity FROM reservation_items i
                         WHERE i.order_id = $1 AND i.product_id = products.product_id),
                     version = version + 1, updated_at_ms = $2
                 WHERE product_id IN (
                     SELECT product_id FROM reservation_items WHERE order_id = $1)",
            )
            .bind(order_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
                .fetch_one(self.db.pool())
                .await?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
