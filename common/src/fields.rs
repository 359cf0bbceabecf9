//! Checks of request fields that every service makes the same way, with errors that name the
//! field (`items[2].product_id must be a UUID`).

use crate::Error;

/// A UUID in its canonical lower-case form.
pub fn uuid(field: &str, raw: &str) -> Result<String, Error> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// Trimmed text of `min` to `max` characters.
pub fn bounded(field: &str, raw: &str, min: usize, max: usize) -> Result<String, Error> {
    let value = raw.trim();
    let chars = value.chars().count();
    if chars < min || chars > max {
        return Err(Error::invalid(
            field,
            if min == 0 {
                format!("must be at most {max} characters")
            } else {
                format!("must be {min} to {max} characters")
            },
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_canonicalised_and_errors_name_the_field() {
        let id = uuid("id", " 67E55044-10B1-426F-9247-BB680E5FE0C8 ");
        assert_eq!(
            id.ok().as_deref(),
            Some("67e55044-10b1-426f-9247-bb680e5fe0c8")
        );
        let error = uuid("items[1].product_id", "nope")
            .err()
            .map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("items[1].product_id must be a UUID"));
    }

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        assert_eq!(bounded("name", "  ab ", 1, 2).ok().as_deref(), Some("ab"));
        assert_eq!(bounded("name", "éé", 1, 2).ok().as_deref(), Some("éé"));
        let too_long = bounded("name", "abc", 1, 2).err().map(|e| e.to_string());
        assert_eq!(too_long.as_deref(), Some("name must be 1 to 2 characters"));
        let empty = bounded("line2", "abc", 0, 2).err().map(|e| e.to_string());
        assert_eq!(empty.as_deref(), Some("line2 must be at most 2 characters"));
    }
}
