//! The order store in SQL. The statements are portable (`$n` placeholders work on SQLite too), so
//! the implementation is written once and stamped out per backend by `sql_store!`. A change is
//! guarded by the status it was decided on (`WHERE status = $old`), so two concurrent changes
//! cannot both apply; the loser decides again on what the winner left.

use std::sync::Arc;

use shop_common::{
    Error,
    clock::now_ms,
    events::{BoxFuture, Envelope, outbox},
    paging::Cursor,
    storage::{Sql, db_error, is_unique_violation, outbox_error},
};
use sqlx::Row as _;

use super::{Applying, Change, Changed, Decide, ListFilter, OrderStore, Placed};
use crate::domain::{Address, Item, Order, Status};

macro_rules! order_columns {
    () => {
        "order_id, user_id, idempotency_key, fingerprint, status, total_minor, currency,
         recipient, line1, line2, city, postal_code, country, cancel_reason, created_at_ms,
         updated_at_ms"
    };
}

fn checkout_swept() -> Error {
    Error::FailedPrecondition(
        "this checkout took too long and its stock was released; place the order again with a new idempotency_key"
            .to_owned(),
    )
}

/// How often a change is decided again after losing to a concurrent one.
const CHANGE_ATTEMPTS: usize = 5;

pub(super) fn open(sql: Sql) -> Arc<dyn OrderStore> {
    match &sql {
        Sql::Postgres(pool) => Arc::new(PgOrderStore {
            pool: pool.clone(),
            begin: "BEGIN",
            sql,
        }),
        // IMMEDIATE takes the write lock up front: a transaction that reads and then writes
        // could otherwise fail to upgrade its lock under concurrency.
        Sql::Sqlite { pool, .. } => Arc::new(SqliteOrderStore {
            pool: pool.clone(),
            begin: "BEGIN IMMEDIATE",
            sql,
        }),
    }
}

macro_rules! sql_store {
    ($store:ident, $db:ty, $outbox:ident) => {
        struct $store {
            pool: sqlx::Pool<$db>,
            begin: &'static str,
            sql: Sql,
        }

        impl $store {
            async fn begin(&self) -> Result<sqlx::Transaction<'static, $db>, Error> {
                self.pool.begin_with(self.begin).await.map_err(db_error)
            }

            fn order(row: &<$db as sqlx::Database>::Row, items: Vec<Item>) -> Result<Order, Error> {
                let status: String = row.try_get("status").map_err(db_error)?;
                let status = Status::parse(&status).ok_or_else(|| {
                    Error::internal(format!("stored order status {status:?} is unknown"))
                })?;
                let get = || -> Result<Order, sqlx::Error> {
                    Ok(Order {
                        id: row.try_get("order_id")?,
                        user_id: row.try_get("user_id")?,
                        idempotency_key: row.try_get("idempotency_key")?,
                        fingerprint: row.try_get("fingerprint")?,
                        status,
                        items,
                        total_minor: row.try_get("total_minor")?,
                        currency: row.try_get("currency")?,
                        address: Address {
                            recipient: row.try_get("recipient")?,
                            line1: row.try_get("line1")?,
                            line2: row.try_get("line2")?,
                            city: row.try_get("city")?,
                            postal_code: row.try_get("postal_code")?,
                            country: row.try_get("country")?,
                        },
                        cancel_reason: row.try_get("cancel_reason")?,
                        created_at_ms: row.try_get("created_at_ms")?,
                        updated_at_ms: row.try_get("updated_at_ms")?,
                    })
                };
                get().map_err(db_error)
            }

            async fn items(
                conn: &mut <$db as sqlx::Database>::Connection,
                order_id: &str,
            ) -> Result<Vec<Item>, Error> {
                let rows = sqlx::query(
                    "SELECT product_id, sku, name, quantity, unit_price_minor, currency
                     FROM order_items WHERE order_id = $1 ORDER BY product_id",
                )
                .bind(order_id)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(Item {
                            product_id: row.try_get("product_id")?,
                            sku: row.try_get("sku")?,
                            name: row.try_get("name")?,
                            quantity: row.try_get("quantity")?,
                            unit_price_minor: row.try_get("unit_price_minor")?,
                            currency: row.try_get("currency")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(db_error)
            }

            async fn load(
                conn: &mut <$db as sqlx::Database>::Connection,
                order_id: &str,
            ) -> Result<Option<Order>, Error> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    order_columns!(),
                    " FROM orders WHERE order_id = $1"
                ))
                .bind(order_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
                match row {
                    Some(row) => {
                        let items = Self::items(conn, order_id).await?;
                        Ok(Some(Self::order(&row, items)?))
                    }
                    None => Ok(None),
                }
            }

            /// The order and its lines; a unique violation means its key was taken.
            async fn insert(
                tx: &mut sqlx::Transaction<'static, $db>,
                order: &Order,
            ) -> Result<(), sqlx::Error> {
                let a = &order.address;
                sqlx::query(concat!(
                    "INSERT INTO orders (",
                    order_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                         $15, $15)"
                ))
                .bind(&order.id)
                .bind(&order.user_id)
                .bind(&order.idempotency_key)
                .bind(&order.fingerprint)
                .bind(order.status.as_str())
                .bind(order.total_minor)
                .bind(&order.currency)
                .bind(&a.recipient)
                .bind(&a.line1)
                .bind(&a.line2)
                .bind(&a.city)
                .bind(&a.postal_code)
                .bind(&a.country)
                .bind(&order.cancel_reason)
                .bind(order.created_at_ms)
                .execute(&mut **tx)
                .await?;
                for item in &order.items {
                    sqlx::query(
                        "INSERT INTO order_items (order_id, product_id, sku, name, quantity,
                             unit_price_minor, currency)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&order.id)
                    .bind(&item.product_id)
                    .bind(&item.sku)
                    .bind(&item.name)
                    .bind(item.quantity)
                    .bind(item.unit_price_minor)
                    .bind(&item.currency)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            /// Ends the order's checkout; false when the sweeper took it first.
            async fn end_checkout_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                order_id: &str,
            ) -> Result<bool, Error> {
                let deleted = sqlx::query("DELETE FROM checkouts WHERE order_id = $1")
                    .bind(order_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                Ok(deleted.rows_affected() == 1)
            }

            /// One attempt of [`OrderStore::change`]; `None` when a concurrent change won.
            async fn try_change(
                &self,
                order_id: &str,
                applying: Option<Applying<'_>>,
                decide: &Decide<'_>,
            ) -> Result<Option<Changed>, Error> {
                let mut tx = self.begin().await?;
                if let Some(a) = applying {
                    let first = outbox::$outbox::record_processed(&mut tx, a.consumer, a.event_id)
                        .await
                        .map_err(outbox_error)?;
                    if !first {
                        return Ok(Some(Changed::Duplicate));
                    }
                }
                let Some(order) = Self::load(&mut tx, order_id).await? else {
                    return Ok(Some(Changed::Missing));
                };
                let Some(Change {
                    status,
                    cancel_reason,
                    events,
                }) = decide(&order)?
                else {
                    tx.commit().await.map_err(db_error)?;
                    return Ok(Some(Changed::Unchanged(order)));
                };
                let now = now_ms();
                let updated = sqlx::query(
                    "UPDATE orders SET status = $2, cancel_reason = $3, updated_at_ms = $4
                     WHERE order_id = $1 AND status = $5",
                )
                .bind(order_id)
                .bind(status.as_str())
                .bind(&cancel_reason)
                .bind(now)
                .bind(order.status.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
                if updated == 0 {
                    return Ok(None);
                }
                for event in &events {
                    outbox::$outbox::append(&mut tx, event)
                        .await
                        .map_err(outbox_error)?;
                }
                tx.commit().await.map_err(db_error)?;
                if !events.is_empty() {
                    self.sql.events_committed();
                }
                Ok(Some(Changed::Applied(Order {
                    status,
                    cancel_reason,
                    updated_at_ms: now,
                    ..order
                })))
            }
        }

        impl OrderStore for $store {
            fn place<'a>(
                &'a self,
                order: &'a Order,
                event: &'a Envelope,
            ) -> BoxFuture<'a, Result<Placed, Error>> {
                Box::pin(async move {
                    let mut tx = self.begin().await?;
                    match Self::insert(&mut tx, order).await {
                        Ok(()) => {
                            if !Self::end_checkout_in(&mut tx, &order.id).await? {
                                tx.rollback().await.map_err(db_error)?;
                                return Err(checkout_swept());
                            }
                            outbox::$outbox::append(&mut tx, event)
                                .await
                                .map_err(outbox_error)?;
                            tx.commit().await.map_err(db_error)?;
                            self.sql.events_committed();
                            Ok(Placed::New(order.clone()))
                        }
                        // The key (or its order id) was taken, by a retry that got here first.
                        Err(e) if is_unique_violation(&e) => {
                            tx.rollback().await.map_err(db_error)?;
                            let mut conn = self.pool.acquire().await.map_err(db_error)?;
                            let existing = Self::load(&mut conn, &order.id).await?;
                            existing.map(Placed::Existing).ok_or_else(|| {
                                Error::internal("an order's key is taken but its order is missing")
                            })
                        }
                        Err(e) => Err(db_error(e)),
                    }
                })
            }

            fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, Error>> {
                Box::pin(async move {
                    let mut conn = self.pool.acquire().await.map_err(db_error)?;
                    Self::load(&mut conn, id).await
                })
            }

            fn begin_checkout<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO checkouts (order_id, started_at_ms) VALUES ($1, $2)
                         ON CONFLICT (order_id) DO NOTHING",
                    )
                    .bind(order_id)
                    .bind(now_ms())
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(())
                })
            }

            fn end_checkout<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
                Box::pin(async move {
                    sqlx::query("DELETE FROM checkouts WHERE order_id = $1")
                        .bind(order_id)
                        .execute(&self.pool)
                        .await
                        .map_err(db_error)?;
                    Ok(())
                })
            }

            fn take_abandoned(
                &self,
                before_ms: i64,
                limit: u32,
            ) -> BoxFuture<'_, Result<Vec<String>, Error>> {
                Box::pin(async move {
                    let candidates: Vec<String> = sqlx::query_scalar(
                        "SELECT order_id FROM checkouts WHERE started_at_ms < $1
                         ORDER BY started_at_ms LIMIT $2",
                    )
                    .bind(before_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                    let mut abandoned = Vec::new();
                    for order_id in candidates {
                        let mut tx = self.begin().await?;
                        // Whoever deletes the row owns it: the sweeper here, or `place`.
                        let taken = Self::end_checkout_in(&mut tx, &order_id).await?;
                        let has_order = Self::load(&mut tx, &order_id).await?.is_some();
                        tx.commit().await.map_err(db_error)?;
                        if taken && !has_order {
                            abandoned.push(order_id);
                        }
                    }
                    Ok(abandoned)
                })
            }

            fn list<'a>(
                &'a self,
                filter: &'a ListFilter,
                after: Option<&'a Cursor>,
                limit: u32,
            ) -> BoxFuture<'a, Result<Vec<Order>, Error>> {
                Box::pin(async move {
                    // Newest first: "after" the cursor means older than it.
                    let (at, id) =
                        after.map_or((i64::MAX, ""), |c| (c.created_at_ms, c.id.as_str()));
                    let mut conn = self.pool.acquire().await.map_err(db_error)?;
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        order_columns!(),
                        " FROM orders
                         WHERE (created_at_ms < $1 OR (created_at_ms = $1 AND order_id < $2))
                           AND ($3 = '' OR user_id = $3) AND ($4 = '' OR status = $4)
                         ORDER BY created_at_ms DESC, order_id DESC LIMIT $5"
                    ))
                    .bind(at)
                    .bind(id)
                    .bind(filter.user_id.as_deref().unwrap_or(""))
                    .bind(filter.status.map_or("", Status::as_str))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    let mut orders = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let id: String = row.try_get("order_id").map_err(db_error)?;
                        let items = Self::items(&mut conn, &id).await?;
                        orders.push(Self::order(row, items)?);
                    }
                    Ok(orders)
                })
            }

            fn change<'a>(
                &'a self,
                order_id: &'a str,
                applying: Option<Applying<'a>>,
                decide: &'a Decide<'a>,
            ) -> BoxFuture<'a, Result<Changed, Error>> {
                Box::pin(async move {
                    for _ in 0..CHANGE_ATTEMPTS {
                        if let Some(changed) = self.try_change(order_id, applying, decide).await? {
                            return Ok(changed);
                        }
                    }
                    Err(Error::Aborted(format!(
                        "order {order_id} kept changing concurrently; try again"
                    )))
                })
            }
        }
    };
}

sql_store!(PgOrderStore, sqlx::Postgres, postgres);
sql_store!(SqliteOrderStore, sqlx::Sqlite, sqlite);
