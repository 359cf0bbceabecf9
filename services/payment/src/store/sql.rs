//! The payment store in SQL, one text for PostgreSQL and SQLite (PostgreSQL settles a payment
//! and appends its event in one statement).

use std::sync::LazyLock;

use shop_common::{
    Error,
    clock::now_ms,
    events::{Envelope, outbox},
    paging::Cursor,
    storage::{Backend, Db},
};
use sqlx::{
    Any, Row as _,
    any::{AnyArguments, AnyRow},
    query::Query,
};

use super::{ListFilter, Settle};
use crate::domain::{Payment, Status};

/// The columns of a [`Payment`], spliced into statements at compile time.
macro_rules! payment_columns {
    () => {
        "payment_id, order_id, user_id, amount_minor, currency, status, failure_reason,
         provider_reference, created_at_ms, updated_at_ms"
    };
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

/// Moves payment $1 from status $6 to $2 (reason $3, reference $4, at $5), returning it: both
/// ways of settling run it ([`bind_settle`] binds its values).
macro_rules! settle_update {
    () => {
        concat!(
            "UPDATE payments SET status = $2, failure_reason = $3, provider_reference = $4,
                 updated_at_ms = $5
             WHERE payment_id = $1 AND status = $6 RETURNING ",
            payment_columns!()
        )
    };
}

fn bind_settle<'q>(
    query: Query<'q, Any, AnyArguments>,
    payment_id: &str,
    settle: &Settle<'_>,
) -> Query<'q, Any, AnyArguments> {
    query
        .bind(payment_id)
        .bind(settle.to.as_str())
        .bind(settle.failure_reason)
        .bind(settle.provider_reference)
        .bind(now_ms())
        .bind(settle.from.as_str())
}

fn payment(row: &AnyRow) -> Result<Payment, Error> {
    let status: String = row.try_get("status")?;
    let status = Status::parse(&status)
        .ok_or_else(|| Error::internal(format!("stored payment status {status:?} is unknown")))?;
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
}

pub(crate) struct PaymentStore {
    db: Db,
}

impl PaymentStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// The payment `query` (one of the `BY_*` statements) finds for `value`.
    async fn one(&self, query: &'static str, value: &str) -> Result<Option<Payment>, Error> {
        let row = sqlx::query(query)
            .bind(value)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(payment).transpose()
    }

    /// The order's payment: `new` stored if the order has none yet, else the one it has.
    pub(crate) async fn open(&self, new: &Payment) -> Result<Payment, Error> {
        let stored = sqlx::query(concat!(
            "INSERT INTO payments (",
            payment_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (order_id) DO NOTHING RETURNING ",
            payment_columns!()
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
        .fetch_optional(self.db.pool())
        .await?;
        if let Some(row) = stored {
            return payment(&row);
        }
        self.one(BY_ORDER, &new.order_id)
            .await?
            .ok_or_else(|| Error::internal("the order's payment exists but cannot be read"))
    }

    /// Moves the payment from `settle.from` to `settle.to` with its event; `None` when it was
    /// no longer in `from` (a concurrent change got there first).
    pub(crate) async fn settle(
        &self,
        payment_id: &str,
        settle: Settle<'_>,
    ) -> Result<Option<Payment>, Error> {
        if let (Backend::Postgres, Some(event)) = (self.db.backend(), &settle.event) {
            return self
                .settle_in_one_statement(payment_id, &settle, event)
                .await;
        }
        let mut tx = self.db.begin().await?;
        let row = bind_settle(sqlx::query(settle_update!()), payment_id, &settle)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let settled = payment(&row)?;
        if let Some(event) = &settle.event {
            outbox::append(&mut tx, event).await?;
        }
        tx.commit().await?;
        self.db.events_committed();
        Ok(Some(settled))
    }

    /// PostgreSQL moves the payment and appends its event in one statement (one round trip
    /// instead of four); the event is written only when the payment moved.
    async fn settle_in_one_statement(
        &self,
        payment_id: &str,
        settle: &Settle<'_>,
        event: &Envelope,
    ) -> Result<Option<Payment>, Error> {
        static SETTLE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH moved AS ({update}),
                 event AS (INSERT INTO outbox ({event}) SELECT $7, $8, $9, $10, $11 FROM moved)
                 SELECT {columns} FROM moved",
                update = settle_update!(),
                columns = payment_columns!(),
                event = outbox::EVENT_COLUMNS,
            )
        });
        // Only numbered placeholders are in the text; every value is bound.
        let query = sqlx::query(sqlx::AssertSqlSafe(SETTLE.as_str()));
        let row = outbox::bind_event(bind_settle(query, payment_id, settle), event)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        self.db.events_committed();
        Ok(Some(payment(&row)?))
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<Payment>, Error> {
        self.one(BY_ID, id).await
    }

    /// Up to `limit` matching payments after `after`, newest first.
    pub(crate) async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<Payment>, Error> {
        // Newest first: "after" the cursor means older than it.
        let (at, id) = after.map_or((i64::MAX, ""), |c| (c.created_at_ms, c.id.as_str()));
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
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(payment).collect()
    }
}
