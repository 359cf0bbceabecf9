-- The catalogue and stock reservations. Portable SQL: the same file runs on PostgreSQL and SQLite.
-- Times are milliseconds since the epoch (UTC); money is integer minor units and a currency code.

CREATE TABLE products (
    product_id TEXT PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency TEXT NOT NULL,
    image_url TEXT NOT NULL,
    -- A JSON object of free-form string attributes.
    attributes TEXT NOT NULL,
    -- Lower-cased name and description, computed by the service, so search is case-insensitive
    -- the same way on every backend.
    search_text TEXT NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0),
    version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX products_by_creation ON products (created_at_ms, product_id);
CREATE INDEX products_by_category ON products (category, created_at_ms, product_id);

-- One row per order that asked for stock: its first outcome, kept so a repeat gets the same
-- answer. status: reserved | released | rejected.
CREATE TABLE reservations (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    failure_code TEXT,
    failure_message TEXT,
    created_at_ms BIGINT NOT NULL,
    released_at_ms BIGINT
);

CREATE TABLE reservation_items (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    product_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
