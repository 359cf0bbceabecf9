//! The order store in SQL, one text for PostgreSQL and SQLite except where PostgreSQL does in one
//! statement what SQLite does in several (placing an order; a change with the record of its
//! event and its own events). A change is guarded by the status it was decided on
//! (`WHERE status = $old`), so two concurrent changes cannot both apply; the loser decides
//! again on what the winner left.

use shop_common::{
    Error,
    clock::now_ms,
    events::{Envelope, outbox},
    paging::Cursor,
    storage::{Backend, Db, is_unique_violation},
};

use sqlx::{
    Any, AnyConnection, AnyPool, Row as _, Transaction,
    any::{AnyArguments, AnyRow},
    query::Query,
};

use super::{Applying, Change, Changed, Decide, ListFilter, Placed};
use crate::domain::{Address, Item, Order, Status};

/// The columns of an [`Order`], spliced into statements at compile time.
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

fn order(row: &AnyRow, items: Vec<Item>) -> Result<Order, Error> {
    let status: String = row.try_get("status")?;
    let status = Status::parse(&status)
        .ok_or_else(|| Error::internal(format!("stored order status {status:?} is unknown")))?;
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
}

/// An order's lines, joined to it under names of their own, and the columns that read them:
/// the statements that read orders read their lines with them.
macro_rules! lines_joined {
    () => {
        "LEFT JOIN (
             SELECT order_id AS item_order_id, product_id AS item_product_id, sku AS item_sku,
                 name AS item_name, quantity AS item_quantity,
                 unit_price_minor AS item_unit_price_minor, currency AS item_currency
             FROM order_items) AS lines ON item_order_id = order_id"
    };
}
macro_rules! line_columns {
    () => {
        ", item_product_id, item_sku, item_name, item_quantity, item_unit_price_minor, item_currency"
    };
}

/// The line a joined row carries; none for an order without lines.
fn line(row: &AnyRow) -> Result<Option<Item>, sqlx::Error> {
    let Some(product_id) = row.try_get::<Option<String>, _>("item_product_id")? else {
        return Ok(None);
    };
    Ok(Some(Item {
        product_id,
        sku: row.try_get("item_sku")?,
        name: row.try_get("item_name")?,
        quantity: row.try_get("item_quantity")?,
        unit_price_minor: row.try_get("item_unit_price_minor")?,
        currency: row.try_get("item_currency")?,
    }))
}

/// The orders of rows that carry one line each, an order's rows next to each other.
fn orders_of(rows: &[AnyRow]) -> Result<Vec<Order>, Error> {
    let mut orders = Vec::new();
    let mut lines = Vec::new();
    for (at, row) in rows.iter().enumerate() {
        lines.extend(line(row)?);
        let id: &str = row.try_get("order_id")?;
        let next_id = rows
            .get(at + 1)
            .map(|next| next.try_get::<&str, _>("order_id"))
            .transpose()?;
        if next_id != Some(id) {
            orders.push(order(row, std::mem::take(&mut lines))?);
        }
    }
    Ok(orders)
}

/// Orders with their lines, one row per line; the caller adds which orders.
macro_rules! orders_with_lines {
    () => {
        concat!(
            "SELECT ",
            order_columns!(),
            line_columns!(),
            " FROM orders ",
            lines_joined!()
        )
    };
}

/// The order and its lines in one statement.
const LOAD: &str = concat!(
    orders_with_lines!(),
    " WHERE order_id = $1 ORDER BY item_product_id"
);

/// PostgreSQL's read before applying an event: the order with its lines ($1) and whether the
/// event ($2 the consumer, $3 its id) was applied before; an order that does not exist leaves
/// one row of NULLs beside `seen`.
const LOAD_FOR_EVENT: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $2 AND event_id = $3)
         AS seen, loaded.*
     FROM (SELECT 1) AS one LEFT JOIN (",
    orders_with_lines!(),
    " WHERE order_id = $1) AS loaded ON true ORDER BY item_product_id"
);

/// What a change finds before deciding.
enum Found {
    Order(Box<Order>),
    Missing,
    /// The event was applied before.
    Duplicate,
}

/// A change's guarded UPDATE: $1 the order, $2..$4 the new status, reason and time, $5 the
/// status it was decided on.
macro_rules! change_update {
    () => {
        "UPDATE orders SET status = $2, cancel_reason = $3, updated_at_ms = $4
         WHERE order_id = $1 AND status = $5"
    };
}

/// Binds [`change_update!`]'s $1..$5 for `change` of `order` (decided on its status) at `now`.
fn bind_change<'q>(
    query: Query<'q, Any, AnyArguments>,
    order: &'q Order,
    change: &'q Change,
    now: i64,
) -> Query<'q, Any, AnyArguments> {
    query
        .bind(order.id.as_str())
        .bind(change.status.as_str())
        .bind(change.cancel_reason.as_str())
        .bind(now)
        .bind(order.status.as_str())
}

/// `rows` rows of `width` numbered placeholders from `$first` on, each as "$a, $b, …", for a
/// `VALUES` list: only numbers go into a statement's text, every value is bound.
fn placeholder_rows(first: usize, width: usize, rows: usize) -> Vec<String> {
    (0..rows)
        .map(|row| {
            let from = first + width * row;
            let numbers: Vec<String> = (from..from + width).map(|n| format!("${n}")).collect();
            numbers.join(", ")
        })
        .collect()
}

/// PostgreSQL applies a change in one statement: the guarded UPDATE ($1..$5 of
/// [`change_update!`]), and only if it updated the order, the record of the event it applies
/// ($6 the consumer, $7 the event's id, when `recording`) and its events in their order (five
/// values each, after those).
fn change_statement(events: usize, recording: bool) -> String {
    let first_event = if recording { 8 } else { 6 };
    let rows: Vec<String> = placeholder_rows(first_event, 5, events)
        .iter()
        .enumerate()
        .map(|(at, row)| format!("({at}, {row})"))
        .collect();
    let mut statement = format!("WITH updated AS ({} RETURNING order_id)", change_update!());
    if recording {
        statement.push_str(
            ", processed AS (
                 INSERT INTO processed_events (consumer, event_id, processed_at_ms)
                 SELECT $6, $7, $4 FROM updated)",
        );
    }
    if events > 0 {
        statement.push_str(&format!(
            ", appended AS (
                 INSERT INTO outbox ({event})
                 SELECT {event} FROM updated, (VALUES {rows}) AS event (position, {event})
                 ORDER BY position)",
            event = outbox::EVENT_COLUMNS,
            rows = rows.join(", "),
        ));
    }
    statement.push_str(" SELECT count(*) AS updated FROM updated");
    statement
}

async fn load(conn: &mut AnyConnection, order_id: &str) -> Result<Option<Order>, Error> {
    let rows = sqlx::query(LOAD)
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(orders_of(&rows)?.pop())
}

/// Binds the order's columns, in `order_columns!()`'s order, to $1..$15 (the creation time is
/// also the update time: `$15, $15`).
fn bind_order<'q>(
    query: Query<'q, Any, AnyArguments>,
    order: &Order,
) -> Query<'q, Any, AnyArguments> {
    let a = &order.address;
    query
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
}

/// Binds a line's columns to the next six placeholders: product_id, sku, name, quantity,
/// unit_price_minor, currency.
fn bind_line<'q>(query: Query<'q, Any, AnyArguments>, item: &Item) -> Query<'q, Any, AnyArguments> {
    query
        .bind(&item.product_id)
        .bind(&item.sku)
        .bind(&item.name)
        .bind(item.quantity)
        .bind(item.unit_price_minor)
        .bind(&item.currency)
}

/// The order and its lines; a unique violation means its key was taken.
async fn insert(conn: &mut AnyConnection, order: &Order) -> Result<(), sqlx::Error> {
    let insert = sqlx::query(concat!(
        "INSERT INTO orders (",
        order_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)"
    ));
    bind_order(insert, order).execute(&mut *conn).await?;
    for item in &order.items {
        let insert = sqlx::query(
            "INSERT INTO order_items (order_id, product_id, sku, name, quantity,
                 unit_price_minor, currency)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&order.id);
        bind_line(insert, item).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Ends the order's checkout; false when the sweeper took it first.
async fn end_checkout_in(conn: &mut AnyConnection, order_id: &str) -> Result<bool, Error> {
    let deleted = sqlx::query("DELETE FROM checkouts WHERE order_id = $1")
        .bind(order_id)
        .execute(&mut *conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Ends the order's checkout unless the sweeper released it once (whatever was noted since);
/// false when it did, or took the checkout first.
async fn end_unswept_checkout(conn: &mut AnyConnection, order_id: &str) -> Result<bool, Error> {
    let deleted = sqlx::query(
        "DELETE FROM checkouts WHERE order_id = $1
         AND NOT EXISTS (SELECT 1 FROM swept_checkouts WHERE order_id = $1)",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// What placing an order wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Placed,
    /// Nothing: the checkout was ended already (its order placed by a concurrent retry), or
    /// the sweeper released its stock.
    CheckoutGone,
    /// Nothing: an order with its id or key exists.
    KeyTaken,
}

/// PostgreSQL places an order in one statement (one round trip instead of six): the checkout
/// ends unless the sweeper released it, and only then are the order, its lines and its event
/// written. A checkout the sweeper holds makes the DELETE wait for it, as in the transaction.
fn place_statement(items: usize) -> String {
    let lines: Vec<String> = placeholder_rows(21, 6, items)
        .iter()
        .map(|row| format!("({row})"))
        .collect();
    format!(
        "WITH ended AS (
             DELETE FROM checkouts WHERE order_id = $1
             AND NOT EXISTS (SELECT 1 FROM swept_checkouts WHERE order_id = $1)
             RETURNING order_id),
         placed AS (
             INSERT INTO orders ({orders})
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15
             FROM ended RETURNING order_id),
         lines AS (
             INSERT INTO order_items (order_id, product_id, sku, name, quantity,
                 unit_price_minor, currency)
             SELECT placed.order_id, line.* FROM placed, (VALUES {lines})
                 AS line (product_id, sku, name, quantity, unit_price_minor, currency)),
         event AS (
             INSERT INTO outbox ({event}) SELECT $16, $17, $18, $19, $20 FROM placed)
         SELECT count(*) AS placed FROM placed",
        orders = order_columns!(),
        lines = lines.join(", "),
        event = outbox::EVENT_COLUMNS,
    )
}

async fn place_in_one_statement(
    pool: &AnyPool,
    order: &Order,
    event: &Envelope,
) -> Result<Written, Error> {
    // Only numbered placeholders are in the text; every value is bound.
    let query = sqlx::query(sqlx::AssertSqlSafe(place_statement(order.items.len())));
    let mut query = outbox::bind_event(bind_order(query, order), event);
    for item in &order.items {
        query = bind_line(query, item);
    }
    match query.fetch_one(pool).await {
        Ok(row) if row.try_get::<i64, _>("placed")? == 1 => Ok(Written::Placed),
        Ok(_) => Ok(Written::CheckoutGone),
        Err(e) if is_unique_violation(&e) => Ok(Written::KeyTaken),
        Err(e) => Err(e.into()),
    }
}

pub(crate) struct OrderStore {
    db: Db,
}

impl OrderStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    #[cfg(test)]
    pub(super) fn db(&self) -> &Db {
        &self.db
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, Error> {
        self.db.begin().await
    }

    /// Stores the order with its `order.created` event and ends its checkout, unless one was
    /// placed under its key already (also concurrently): then that one is returned.
    /// Errors: FAILED_PRECONDITION when the checkout was swept as abandoned (its stock is gone).
    pub(crate) async fn place(&self, order: &Order, event: &Envelope) -> Result<Placed, Error> {
        let written = match self.db.backend() {
            Backend::Postgres if !order.items.is_empty() => {
                place_in_one_statement(self.db.pool(), order, event).await?
            }
            _ => self.place_in_transaction(order, event).await?,
        };
        if written == Written::Placed {
            self.db.events_committed();
            return Ok(Placed::New(order.clone()));
        }
        // A retry that got here first placed it; or the sweeper released the checkout.
        match (self.get(&order.id).await?, written) {
            (Some(existing), _) => Ok(Placed::Existing(existing)),
            (None, Written::KeyTaken) => Err(Error::internal(
                "an order's key is taken but its order is missing",
            )),
            (None, _) => Err(checkout_swept()),
        }
    }

    /// The order, its lines, the end of its checkout and its event, in one transaction.
    async fn place_in_transaction(
        &self,
        order: &Order,
        event: &Envelope,
    ) -> Result<Written, Error> {
        let mut tx = self.begin().await?;
        match insert(&mut tx, order).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => return Ok(Written::KeyTaken),
            Err(e) => return Err(e.into()),
        }
        if !end_unswept_checkout(&mut tx, &order.id).await? {
            tx.rollback().await?;
            return Ok(Written::CheckoutGone);
        }
        outbox::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Written::Placed)
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<Order>, Error> {
        let mut conn = self.db.pool().acquire().await?;
        load(&mut conn, id).await
    }

    /// Notes that stock is about to be reserved for `order_id`, unless its order exists or the
    /// checkout is noted already: then false, and the caller looks for the order.
    pub(crate) async fn begin_checkout(&self, order_id: &str) -> Result<bool, Error> {
        // One statement for the common case, a new key: no order to look up first.
        let noted = sqlx::query(
            "INSERT INTO checkouts (order_id, started_at_ms)
             SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM orders WHERE order_id = $1)
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(noted.rows_affected() == 1)
    }

    /// Forgets a checkout that made no order and holds no stock (the reservation was refused).
    pub(crate) async fn end_checkout(&self, order_id: &str) -> Result<(), Error> {
        let mut conn = self.db.pool().acquire().await?;
        end_checkout_in(&mut conn, order_id).await?;
        Ok(())
    }

    /// Checkouts begun before `before_ms` that made no order, taken off the list (up to
    /// `limit`): their stock is the caller's to release. Rows whose order exists are dropped.
    pub(crate) async fn take_abandoned(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT order_id FROM checkouts WHERE started_at_ms < $1
             ORDER BY started_at_ms LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        let mut abandoned = Vec::new();
        for order_id in candidates {
            let mut tx = self.begin().await?;
            // Whoever deletes the row owns it: the sweeper here, or `place`.
            let taken = end_checkout_in(&mut tx, &order_id).await?;
            let has_order = load(&mut tx, &order_id).await?.is_some();
            if taken && !has_order {
                // Remembered for good: a retry under the same key may note the checkout
                // again, and must not place the order whose stock is released now.
                sqlx::query(
                    "INSERT INTO swept_checkouts (order_id, swept_at_ms) VALUES ($1, $2)
                     ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(&order_id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            if taken && !has_order {
                abandoned.push(order_id);
            }
        }
        Ok(abandoned)
    }

    /// How many orders wait for their payment, and when the oldest of them was placed.
    pub(crate) async fn pending_payment(&self) -> Result<(i64, Option<i64>), Error> {
        let row = sqlx::query(
            "SELECT count(*) AS waiting, min(created_at_ms) AS oldest FROM orders
             WHERE status = $1",
        )
        .bind(Status::PendingPayment.as_str())
        .fetch_one(self.db.pool())
        .await?;
        Ok((row.try_get("waiting")?, row.try_get("oldest")?))
    }

    /// Up to `limit` matching orders after `after`, newest first.
    pub(crate) async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<Order>, Error> {
        // Newest first: "after" the cursor means older than it.
        let (at, id) = after.map_or((i64::MAX, ""), |c| (c.created_at_ms, c.id.as_str()));
        let rows = sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            line_columns!(),
            " FROM (SELECT ",
            order_columns!(),
            " FROM orders
                 WHERE (created_at_ms < $1 OR (created_at_ms = $1 AND order_id < $2))
                   AND ($3 = '' OR user_id = $3) AND ($4 = '' OR status = $4)
                 ORDER BY created_at_ms DESC, order_id DESC LIMIT $5) AS page ",
            lines_joined!(),
            " ORDER BY created_at_ms DESC, order_id DESC, item_product_id"
        ))
        .bind(at)
        .bind(id)
        .bind(filter.user_id.as_deref().unwrap_or(""))
        .bind(filter.status.map_or("", Status::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        orders_of(&rows)
    }

    /// Reads the order, lets `decide` choose a change, and applies it with its events and the
    /// record of the event it applies, all or nothing; a concurrent change makes it decide
    /// again on the fresh order.
    pub(crate) async fn change(
        &self,
        order_id: &str,
        applying: Option<Applying<'_>>,
        decide: &Decide<'_>,
    ) -> Result<Changed, Error> {
        for _ in 0..CHANGE_ATTEMPTS {
            let attempt = match self.db.backend() {
                Backend::Postgres => self.try_change_unlocked(order_id, applying, decide).await?,
                Backend::Sqlite | Backend::MongoDb => {
                    self.try_change_in_transaction(order_id, applying, decide)
                        .await?
                }
            };
            if let Some(changed) = attempt {
                return Ok(changed);
            }
        }
        Err(Error::Aborted(format!(
            "order {order_id} kept changing concurrently; try again"
        )))
    }

    /// One attempt of [`OrderStore::change`] on SQLite, in a transaction (which holds the
    /// database's one write lock): the event recorded first, then the order read, changed and
    /// its events appended. `None` when a concurrent change won.
    async fn try_change_in_transaction(
        &self,
        order_id: &str,
        applying: Option<Applying<'_>>,
        decide: &Decide<'_>,
    ) -> Result<Option<Changed>, Error> {
        let mut tx = self.begin().await?;
        if let Some(a) = applying
            && !outbox::record_processed(&mut tx, a.consumer, a.event_id).await?
        {
            return Ok(Some(Changed::Duplicate));
        }
        let Some(order) = load(&mut tx, order_id).await? else {
            return Ok(Some(Changed::Missing));
        };
        let Some(change) = decide(&order)? else {
            tx.commit().await?;
            return Ok(Some(Changed::Unchanged(order)));
        };
        let now = now_ms();
        let updated = bind_change(sqlx::query(change_update!()), &order, &change, now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !updated {
            return Ok(None);
        }
        for event in &change.events {
            outbox::append(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(Some(self.applied(order, change, now)))
    }

    /// One attempt of [`OrderStore::change`] on PostgreSQL, in two statements and no
    /// transaction of its own (two round trips where a transaction took four): a read of the
    /// order and of whether the event was applied before, then [`change_statement`], which
    /// writes only if the order still has the status the change was decided on. Two deliveries
    /// of one event at once: the second's UPDATE waits for the first and then finds the status
    /// moved on (or its record of the event is a duplicate key, which undoes its statement),
    /// and its next attempt reads the event as applied. `None` when a concurrent change won.
    async fn try_change_unlocked(
        &self,
        order_id: &str,
        applying: Option<Applying<'_>>,
        decide: &Decide<'_>,
    ) -> Result<Option<Changed>, Error> {
        let order = match self.load_for_change(order_id, applying).await? {
            Found::Order(order) => *order,
            Found::Missing => return Ok(Some(Changed::Missing)),
            Found::Duplicate => return Ok(Some(Changed::Duplicate)),
        };
        let Some(change) = decide(&order)? else {
            if let Some(a) = applying {
                let mut conn = self.db.pool().acquire().await?;
                if !outbox::record_processed(&mut conn, a.consumer, a.event_id).await? {
                    return Ok(Some(Changed::Duplicate));
                }
            }
            return Ok(Some(Changed::Unchanged(order)));
        };
        let now = now_ms();
        // Only numbered placeholders are in the text; every value is bound.
        let statement = change_statement(change.events.len(), applying.is_some());
        let mut query = bind_change(
            sqlx::query(sqlx::AssertSqlSafe(statement)),
            &order,
            &change,
            now,
        );
        if let Some(a) = applying {
            query = query.bind(a.consumer).bind(a.event_id);
        }
        let query = change.events.iter().fold(query, outbox::bind_event);
        let updated = match query.fetch_one(self.db.pool()).await {
            Ok(row) => row.try_get::<i64, _>("updated")? == 1,
            // A concurrent delivery of this event recorded it without a change.
            Err(error) if is_unique_violation(&error) => false,
            Err(error) => return Err(error.into()),
        };
        if !updated {
            return Ok(None);
        }
        Ok(Some(self.applied(order, change, now)))
    }

    /// The order as `change` left it at `now`; wakes the relay when the change announced
    /// something.
    fn applied(&self, order: Order, change: Change, now: i64) -> Changed {
        if !change.events.is_empty() {
            self.db.events_committed();
        }
        Changed::Applied(Order {
            status: change.status,
            cancel_reason: change.cancel_reason,
            updated_at_ms: now,
            ..order
        })
    }

    /// PostgreSQL's read before a change: the order, and whether the event being applied (if
    /// any) was applied before.
    async fn load_for_change(
        &self,
        order_id: &str,
        applying: Option<Applying<'_>>,
    ) -> Result<Found, Error> {
        let found =
            |order: Option<Order>| order.map_or(Found::Missing, |o| Found::Order(Box::new(o)));
        let mut conn = self.db.pool().acquire().await?;
        let Some(a) = applying else {
            return Ok(found(load(&mut conn, order_id).await?));
        };
        let rows = sqlx::query(LOAD_FOR_EVENT)
            .bind(order_id)
            .bind(a.consumer)
            .bind(a.event_id)
            .fetch_all(&mut *conn)
            .await?;
        let first = rows
            .first()
            .ok_or_else(|| Error::internal("reading an order for an event read no row"))?;
        if first.try_get::<bool, _>("seen")? {
            return Ok(Found::Duplicate);
        }
        if first.try_get::<Option<&str>, _>("order_id")?.is_none() {
            return Ok(Found::Missing);
        }
        Ok(found(orders_of(&rows)?.pop()))
    }
}
