//! Accounts and the rules on their fields. Parsing is the validation: a value of these types is
//! valid, so nothing past the API layer checks again.

use shop_common::{Error, auth::Role};

/// Trimmed, lower-case, 3 to 254 characters, one `@` with something on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email(String);

impl Email {
    pub(crate) fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        let email = raw.trim().to_lowercase();
        if !(3..=254).contains(&email.chars().count()) {
            return Err(Error::invalid(field, "must be 3 to 254 characters"));
        }
        match email.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !email.chars().any(char::is_whitespace) =>
            {
                Ok(Self(email))
            }
            _ => Err(Error::invalid(
                field,
                "must be an email address like name@example.com",
            )),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy: at least 12 characters, at most 1024 (hashing cost), and
/// not the email itself.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Password(String);

impl Password {
    pub(crate) const MIN_CHARS: usize = 12;
    const MAX_CHARS: usize = 1024;

    pub(crate) fn parse(field: &str, raw: &str, email: &Email) -> Result<Self, Error> {
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be at least {} characters", Self::MIN_CHARS),
            ));
        }
        if chars > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if raw.trim().to_lowercase() == email.as_str() {
            return Err(Error::invalid(field, "must not be the email address"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// 1 to 100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DisplayName(String);

impl DisplayName {
    pub(crate) fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        let name = raw.trim();
        if !(1..=100).contains(&name.chars().count()) {
            return Err(Error::invalid(field, "must be 1 to 100 characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Roles an account may hold: `service` belongs to service clients, never to an account.
pub(crate) fn parse_account_roles(field: &str, raw: &[String]) -> Result<Vec<Role>, Error> {
    let mut roles = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        let role = match name.trim() {
            "customer" => Role::Customer,
            "admin" => Role::Admin,
            other => {
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("{other:?} is not a role; use customer or admin"),
                ));
            }
        };
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(Error::invalid(field, "must hold at least one role"));
    }
    Ok(roles)
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Customer => "customer",
        Role::Admin => "admin",
        Role::Service => "service",
    }
}

/// Roles as stored: comma-separated names.
pub(crate) fn roles_to_column(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| role_name(*r))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn roles_from_column(column: &str) -> Vec<Role> {
    column
        .split(',')
        .filter_map(|name| match name {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        })
        .collect()
}

/// An account as stored, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) display_name: String,
    pub(crate) roles: Vec<Role>,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
}

/// A new account, validated and with its password already hashed.
#[derive(Debug, Clone)]
pub(crate) struct NewUser {
    pub(crate) id: String,
    pub(crate) email: Email,
    pub(crate) display_name: DisplayName,
    pub(crate) roles: Vec<Role>,
    pub(crate) password_hash: String,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserChanges {
    pub(crate) email: Option<Email>,
    pub(crate) display_name: Option<DisplayName>,
    pub(crate) roles: Option<Vec<Role>>,
    pub(crate) password_hash: Option<String>,
}

pub(crate) use shop_common::fields::uuid as user_id;

#[cfg(test)]
mod tests {
    use super::*;

    fn email(raw: &str) -> Email {
        Email::parse("email", raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(email("  Ada@Example.COM ").as_str(), "ada@example.com");
    }

    #[test]
    fn malformed_emails_are_refused_with_the_field_named() {
        for raw in [
            "",
            "ab",
            "no-at-sign",
            "@example.com",
            "ada@",
            "a@b@c",
            "a b@c.d",
        ] {
            let error = Email::parse("email", raw).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.starts_with("email ")),
                "{raw:?} gave {error:?}"
            );
        }
    }

    #[test]
    fn short_passwords_and_the_email_as_password_are_refused() {
        let ada = email("ada@example.com");
        let short = Password::parse("password", "elevenchars", &ada).err();
        assert_eq!(
            short.map(|e| e.to_string()).as_deref(),
            Some("password must be at least 12 characters")
        );
        let same = Password::parse("password", "Ada@Example.com", &ada).err();
        assert_eq!(
            same.map(|e| e.to_string()).as_deref(),
            Some("password must not be the email address")
        );
        assert!(Password::parse("password", "correct horse battery", &ada).is_ok());
    }

    #[test]
    fn the_service_role_cannot_be_given_to_an_account() {
        let error = parse_account_roles("user.roles", &["customer".into(), "service".into()]);
        assert_eq!(
            error.err().map(|e| e.to_string()).as_deref(),
            Some("user.roles[1] \"service\" is not a role; use customer or admin")
        );
    }

    #[test]
    fn roles_survive_the_column() {
        let roles = vec![Role::Customer, Role::Admin];
        assert_eq!(roles_from_column(&roles_to_column(&roles)), roles);
    }
}
