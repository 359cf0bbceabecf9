-- Checkouts the sweeper released. A client retrying under the same key notes the checkout again
-- and may still be told "reserved" by product-service while the release is on its way: its order
-- is refused if the checkout is here, so no order stands on stock that was given back.
-- Portable SQL: the same file runs on PostgreSQL and SQLite.
CREATE TABLE swept_checkouts (
    order_id TEXT PRIMARY KEY,
    swept_at_ms BIGINT NOT NULL
);
