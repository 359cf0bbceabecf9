-- Orders and their lines. Portable SQL: the same file runs on PostgreSQL and SQLite.
-- Times are milliseconds since the epoch (UTC); money is integer minor units and a currency code.

CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    -- The client's key and a digest of its request: the same key returns this order, a
    -- different request under the same key is refused.
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    -- pending_payment | paid | confirmed | cancelled | shipped
    status TEXT NOT NULL,
    total_minor BIGINT NOT NULL CHECK (total_minor >= 0),
    currency TEXT NOT NULL,
    recipient TEXT NOT NULL,
    line1 TEXT NOT NULL,
    line2 TEXT NOT NULL,
    city TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    country TEXT NOT NULL,
    cancel_reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (user_id, idempotency_key)
);

CREATE INDEX orders_by_user ON orders (user_id, created_at_ms, order_id);
CREATE INDEX orders_by_creation ON orders (created_at_ms, order_id);

CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    product_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    currency TEXT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
