-- Accounts and their refresh tokens. Portable SQL: the same file runs on PostgreSQL and SQLite.
-- Times are milliseconds since the epoch (UTC).

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX users_by_creation ON users (created_at_ms, user_id);

-- Only the SHA-256 of each refresh token is kept. A login starts a family; each refresh spends
-- one token and adds the next to the same family; presenting a spent token revokes the family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    expires_at_ms BIGINT NOT NULL,
    spent_at_ms BIGINT,
    revoked_at_ms BIGINT
);

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);
