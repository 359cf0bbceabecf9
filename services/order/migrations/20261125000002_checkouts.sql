-- Checkouts between ReserveStock and the order: a row is written before stock is reserved and
-- deleted in the transaction that writes the order. A row left behind (PlaceOrder timed out or
-- the process died in between) is an abandoned checkout; the sweeper deletes it and releases
-- its stock. An order whose checkout row was swept is refused, so no order exists without stock.
CREATE TABLE checkouts (
    order_id TEXT PRIMARY KEY,
    started_at_ms BIGINT NOT NULL
);

CREATE INDEX checkouts_by_start ON checkouts (started_at_ms);
