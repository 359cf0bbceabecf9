//! List pagination shared by every service: bounded page sizes and opaque keyset cursors over
//! the (created_at, id) order, so a walk sees every row once even while rows are added at the end.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::Error;

/// 1 to 100; 0 means the default of 20.
pub fn page_size(field: &str, requested: i32) -> Result<u32, Error> {
    match requested {
        0 => Ok(20),
        1..=100 => Ok(requested.unsigned_abs()),
        _ => Err(Error::invalid(field, "must be between 1 and 100")),
    }
}

/// Where a page resumes: after this (created_at_ms, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: i64,
    pub id: String,
}

impl Cursor {
    /// Opaque to clients: base64url of `created_at_ms:id`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at_ms, self.id))
    }

    /// `None` for an empty token (the first page).
    pub fn decode(field: &str, token: &str) -> Result<Option<Self>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let malformed = || Error::invalid(field, "is not a page token from a previous response");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let (at, id) = text.split_once(':').ok_or_else(malformed)?;
        let created_at_ms = at.parse().map_err(|_| malformed())?;
        uuid::Uuid::parse_str(id).map_err(|_| malformed())?;
        Ok(Some(Self {
            created_at_ms,
            id: id.to_owned(),
        }))
    }

    /// The keyset bounds to bind for "after the cursor": the smallest key without one.
    pub fn bounds(cursor: Option<&Self>) -> (i64, &str) {
        cursor.map_or((i64::MIN, ""), |c| (c.created_at_ms, c.id.as_str()))
    }
}

/// Splits `rows` (fetched with `limit + 1`) into the page and the token of the next one.
pub fn page<T>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> Cursor) -> (Vec<T>, String) {
    let limit = limit as usize;
    if rows.len() <= limit {
        return (rows, String::new());
    }
    rows.truncate(limit);
    let next = rows.last().map(|row| key(row).encode()).unwrap_or_default();
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() -> Result<(), Error> {
        let cursor = Cursor {
            created_at_ms: 1_700_000_000_123,
            id: uuid::Uuid::new_v4().to_string(),
        };
        assert_eq!(
            Cursor::decode("page_token", &cursor.encode())?,
            Some(cursor)
        );
        assert_eq!(Cursor::decode("page_token", "")?, None);
        for bad in [
            "!!!",
            &URL_SAFE_NO_PAD.encode("12:not-a-uuid"),
            "bm9jb2xvbg",
        ] {
            let error = Cursor::decode("page_token", bad)
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                error.as_deref(),
                Some("page_token is not a page token from a previous response"),
                "{bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn page_size_is_bounded() {
        assert_eq!(page_size("page_size", 0).ok(), Some(20));
        assert_eq!(page_size("page_size", 100).ok(), Some(100));
        assert!(page_size("page_size", 101).is_err());
        assert!(page_size("page_size", -1).is_err());
    }

    #[test]
    fn a_full_page_carries_the_token_of_its_last_row() {
        let rows: Vec<i64> = (1..=4).collect();
        let key = |n: &i64| Cursor {
            created_at_ms: *n,
            id: String::new(),
        };
        let (page_rows, next) = page(rows.clone(), 3, key);
        assert_eq!(page_rows, [1, 2, 3]);
        assert_eq!(next, key(&3).encode());
        let (all, next) = page(rows, 4, key);
        assert_eq!((all.len(), next.as_str()), (4, ""));
    }
}
