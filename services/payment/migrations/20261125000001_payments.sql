-- Payments: at most one per order (the UNIQUE order_id is what makes a charge happen at most
-- once however often `order.created` is delivered). Portable SQL for PostgreSQL and SQLite.
-- Times are milliseconds since the epoch (UTC); money is integer minor units and a currency code.

CREATE TABLE payments (
    payment_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency TEXT NOT NULL,
    -- pending | succeeded | failed | refunded
    status TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    provider_reference TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX payments_by_user ON payments (user_id, created_at_ms, payment_id);
CREATE INDEX payments_by_creation ON payments (created_at_ms, payment_id);
