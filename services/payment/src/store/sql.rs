//! The payment store in SQL. The statements are portable (`$n` placeholders work on SQLite too),
//! so the implementation is written once and stamped out per backend by `sql_store!`.

use std::sync::Arc;

use super::{ListFilter, PaymentStore, Settle};
use crate::domain::{Payment, Status};
use shop_common::{
    Error,
    clock::now_ms,
    events::{BoxFuture, outbox},
    paging::Cursor,
    storage::{Sql, db_error, outbox_error},
};

macro_rules! payment_columns {
    () => {
        "payment_id, order_id, user_id, amount_minor, currency, status, failure_reason,
         provider_reference, created_at_ms, updated_at_ms"
    };
}

pub(super) fn open(sql: Sql) -> Arc<dyn PaymentStore> {
    match &sql {
        Sql::Postgres(pool) => Arc::new(PgPaymentStore {
            pool: pool.clone(),
            sql,
        }),
        Sql::Sqlite { pool, .. } => Arc::new(SqlitePaymentStore {
            pool: pool.clone(),
            sql,
        }),
    }
}

fn payment<R: sqlx::Row>(row: &R) -> Result<Payment, Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let status: String = row.try_get("status").map_err(db_error)?;
    let status = Status::parse(&status)
        .ok_or_else(|| Error::internal(format!("stored payment status {status:?} is unknown")))?;
    let get = || -> Result<Payment, sqlx::Error> {
        Ok(Payment {
            id: row.try_get("payment_id")?,
            order_id: row.try_get("order_id")?,
            user_id: row.try_get("user_id")?,
            amount_minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
            status,
            failure_reason: row.try_get("failure_reason")?,
            provider_reference: row.try_get("provider_reference")?,
            created_at_ms: row.try_get("created_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        })
    };
    get().map_err(db_error)
}

const BY_ID: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE payment_id = $1"
);
const BY_ORDER: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE order_id = $1"
);

macro_rules! sql_store {
    ($store:ident, $db:ty, $outbox:ident) => {
        struct $store {
            pool: sqlx::Pool<$db>,
            sql: Sql,
        }

        impl $store {
            /// The payment `query` (one of the `BY_*` statements) finds for `value`.
            async fn one(
                &self,
                query: &'static str,
                value: &str,
            ) -> Result<Option<Payment>, Error> {
                sqlx::query(query)
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?
                    .as_ref()
                    .map(payment)
                    .transpose()
            }
        }

        impl PaymentStore for $store {
            fn open<'a>(&'a self, new: &'a Payment) -> BoxFuture<'a, Result<Payment, Error>> {
                Box::pin(async move {
                    sqlx::query(concat!(
                        "INSERT INTO payments (",
                        payment_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                         ON CONFLICT (order_id) DO NOTHING"
                    ))
                    .bind(&new.id)
                    .bind(&new.order_id)
                    .bind(&new.user_id)
                    .bind(new.amount_minor)
                    .bind(&new.currency)
                    .bind(new.status.as_str())
                    .bind(&new.failure_reason)
                    .bind(&new.provider_reference)
                    .bind(new.created_at_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    self.one(BY_ORDER, &new.order_id).await?.ok_or_else(|| {
                        Error::internal("a payment vanished right after it was stored")
                    })
                })
            }

            fn settle<'a>(
                &'a self,
                payment_id: &'a str,
                settle: Settle<'a>,
            ) -> BoxFuture<'a, Result<Option<Payment>, Error>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(db_error)?;
                    let row = sqlx::query(concat!(
                        "UPDATE payments SET status = $2, failure_reason = $3,
                             provider_reference = $4, updated_at_ms = $5
                         WHERE payment_id = $1 AND status = $6 RETURNING ",
                        payment_columns!()
                    ))
                    .bind(payment_id)
                    .bind(settle.to.as_str())
                    .bind(settle.failure_reason)
                    .bind(settle.provider_reference)
                    .bind(now_ms())
                    .bind(settle.from.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let settled = payment(&row)?;
                    if let Some(event) = &settle.event {
                        outbox::$outbox::append(&mut tx, event)
                            .await
                            .map_err(outbox_error)?;
                    }
                    tx.commit().await.map_err(db_error)?;
                    self.sql.events_committed();
                    Ok(Some(settled))
                })
            }

            fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Payment>, Error>> {
                Box::pin(self.one(BY_ID, id))
            }

            fn list<'a>(
                &'a self,
                filter: &'a ListFilter,
                after: Option<&'a Cursor>,
                limit: u32,
            ) -> BoxFuture<'a, Result<Vec<Payment>, Error>> {
                Box::pin(async move {
                    // Newest first: "after" the cursor means older than it.
                    let (at, id) =
                        after.map_or((i64::MAX, ""), |c| (c.created_at_ms, c.id.as_str()));
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        payment_columns!(),
                        " FROM payments
                         WHERE (created_at_ms < $1 OR (created_at_ms = $1 AND payment_id < $2))
                           AND ($3 = '' OR user_id = $3) AND ($4 = '' OR order_id = $4)
                         ORDER BY created_at_ms DESC, payment_id DESC LIMIT $5"
                    ))
                    .bind(at)
                    .bind(id)
                    .bind(filter.user_id.as_deref().unwrap_or(""))
                    .bind(filter.order_id.as_deref().unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                    rows.iter().map(payment).collect()
                })
            }
        }
    };
}

sql_store!(PgPaymentStore, sqlx::Postgres, postgres);
sql_store!(SqlitePaymentStore, sqlx::Sqlite, sqlite);
