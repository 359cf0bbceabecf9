//! Accounts and the rules on their fields. Parsing is the validation: a value of these types is
//! valid, so nothing past the API layer checks again.

use shop_common::{Error, auth::Role};
use unicode_normalization::UnicodeNormalization as _;

/// An email as accounts are keyed and looked up by: NFKC, trimmed, lower-cased. Login uses it
/// too, so `ＡＤＡ@example.com` finds the account of `ada@example.com`; it refuses nothing, because
/// login must not tell a malformed email from an unknown one.
pub(crate) fn normalise_email(raw: &str) -> String {
    raw.nfkc().collect::<String>().trim().to_lowercase()
}

/// A normalised (see [`normalise_email`]) address of 3 to 254 ASCII characters: a local part in
/// the characters the HTML `<input type=email>` rule allows, one `@`, and a domain of at least
/// two dot-separated labels of letters, digits and inner hyphens.
///
/// Why ASCII only: an email names an account, so two addresses that look the same must be the
/// same account or one of them must be refused. NFKC folds compatibility forms (full-width
/// `ａｄｍｉｎ`, ligatures, the Kelvin sign) into plain ASCII, so those land on the real account
/// and registering them fails with ALREADY_EXISTS. It leaves letters of other scripts alone:
/// Cyrillic `а` is not Latin `a`, and no normalisation makes `аdmin@shop.local` and
/// `admin@shop.local` one account. Refusing whatever is still non-ASCII closes that hole; the
/// cost is internationalised addresses (SMTPUTF8), which a shop can live without, and an
/// internationalised domain can still be given in its `xn--` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email(String);

impl Email {
    /// RFC 1035's limit on one label of a domain name.
    const MAX_LABEL_CHARS: usize = 63;

    pub(crate) fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        let email = normalise_email(raw);
        if let Some(c) = email.chars().find(|c| is_invisible_or_control(*c)) {
            return Err(invisible_character(field, c));
        }
        if email.chars().any(char::is_whitespace) {
            return Err(Error::invalid(field, "must not contain spaces"));
        }
        if !(3..=254).contains(&email.chars().count()) {
            return Err(Error::invalid(field, "must be 3 to 254 characters"));
        }
        if let Some(c) = email.chars().find(|c| !c.is_ascii()) {
            return Err(Error::invalid(
                field,
                format!(
                    "must use only ASCII letters, digits and symbols; {c:?} (U+{:04X}) is not ASCII",
                    u32::from(c)
                ),
            ));
        }
        let Some((local, domain)) = email
            .split_once('@')
            .filter(|(local, domain)| !local.is_empty() && !domain.contains('@'))
        else {
            return Err(Error::invalid(
                field,
                "must be an email address like name@example.com",
            ));
        };
        if !local.chars().all(is_local_part_char) {
            return Err(Error::invalid(
                field,
                "must have only letters, digits and . ! # $ % & ' * + / = ? ^ _ ` { | } ~ - before the @",
            ));
        }
        if !Self::is_domain(domain) {
            return Err(Error::invalid(
                field,
                "must end in a domain like example.com: labels of letters, digits and hyphens, \
                 separated by dots",
            ));
        }
        Ok(Self(email))
    }

    fn is_domain(domain: &str) -> bool {
        let labels: Vec<&str> = domain.split('.').collect();
        labels.len() >= 2
            && labels.iter().all(|label| {
                (1..=Self::MAX_LABEL_CHARS).contains(&label.len())
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The local-part characters of the HTML `<input type=email>` rule (RFC 5322's atext and the
/// dot): no quotes, brackets, commas or spaces, which mail systems read differently.
fn is_local_part_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c)
}

/// A password that meets the policy: at least 12 characters (not bytes), at most 1024 (hashing
/// cost), not only whitespace, no control characters (a tab or line break is a paste accident
/// that cannot be typed back at login), and not the email itself.
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
        if raw.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                "must not contain control characters such as tabs, line breaks or NUL",
            ));
        }
        if raw.trim().is_empty() {
            return Err(Error::invalid(field, "must not be only spaces"));
        }
        if normalise_email(raw) == email.as_str() {
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

/// NFKC, trimmed, 1 to 100 characters, and no invisible or control characters: a name must not
/// hide text, reverse itself on screen or break the line of a log or an email it is put in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DisplayName(String);

impl DisplayName {
    pub(crate) fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        let normalised: String = raw.nfkc().collect();
        let name = normalised.trim();
        if let Some(c) = name.chars().find(|c| is_invisible_or_control(*c)) {
            return Err(invisible_character(field, c));
        }
        if !(1..=100).contains(&name.chars().count()) {
            return Err(Error::invalid(field, "must be 1 to 100 characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that show as nothing or change how the text around them shows: controls (Cc:
/// NUL, ESC, line breaks), format characters (Cf: zero-width spaces and joiners, the BOM, bidi
/// marks, embeddings, overrides and isolates, tags) and the line and paragraph separators. They
/// let two values that differ look the same, so no account field holds them.
fn is_invisible_or_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || FORMAT_CHARACTERS
            .iter()
            .any(|&(first, last)| (first..=last).contains(&c))
}

/// General category Cf as of Unicode 18 (the standard library only knows Cc). New ones are
/// rare; a character added later and missing here is merely not refused.
const FORMAT_CHARACTERS: [(char, char); 21] = [
    ('\u{AD}', '\u{AD}'),
    ('\u{600}', '\u{605}'),
    ('\u{61C}', '\u{61C}'),
    ('\u{6DD}', '\u{6DD}'),
    ('\u{70F}', '\u{70F}'),
    ('\u{890}', '\u{891}'),
    ('\u{8E2}', '\u{8E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

fn invisible_character(field: &str, c: char) -> Error {
    Error::invalid(
        field,
        format!(
            "must not contain invisible or control characters (found U+{:04X})",
            u32::from(c)
        ),
    )
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

    /// The error `parse` gives for `raw`, which must name `field`.
    fn refused<T>(field: &str, raw: &str, parsed: Result<T, Error>) -> String {
        match parsed {
            Ok(_) => panic!("{raw:?} was accepted as {field}"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(&format!("{field} ")),
                    "{raw:?} gave {message:?}, which does not name {field}"
                );
                message
            }
        }
    }

    #[test]
    fn an_ordinary_address_still_parses() {
        for raw in [
            "ada@example.com",
            "ada.lovelace+shop@mail.example.co.uk",
            "o'brien_99@sub-domain.example",
            "admin@shop.local",
        ] {
            assert_eq!(email(raw).as_str(), raw);
        }
    }

    #[test]
    fn full_width_look_alikes_collapse_to_the_ascii_address() {
        for raw in [
            "ａｄｍｉｎ@ｓｈｏｐ.ｌｏｃａｌ",
            "ＡＤＭＩＮ＠shop.local",
            "admin@shop\u{FF0E}local",
        ] {
            assert_eq!(email(raw).as_str(), "admin@shop.local", "{raw:?}");
        }
    }

    #[test]
    fn login_normalises_an_email_as_registration_does_but_refuses_nothing() {
        assert_eq!(
            normalise_email(" ＡＤＡ@Example.ｃｏｍ\n"),
            email("ada@example.com").as_str()
        );
        // Malformed is merely unknown at login: these reach a lookup that finds nothing.
        assert_eq!(
            normalise_email("\u{430}da@example.com"),
            "\u{430}da@example.com"
        );
        assert_eq!(normalise_email("A@B"), "a@b");
    }

    #[test]
    fn cyrillic_and_other_non_ascii_look_alikes_are_refused() {
        for raw in [
            "\u{430}dmin@shop.local",
            "admin@sh\u{43E}p.local",
            "ad\u{3B9}min@shop.local",
            "admin@m\u{FC}nchen.de",
        ] {
            let message = refused("email", raw, Email::parse("email", raw));
            assert!(message.contains("ASCII"), "{raw:?} gave {message:?}");
        }
    }

    #[test]
    fn invisible_and_control_characters_in_an_email_are_refused() {
        for invisible in [
            '\u{0}',
            '\u{1B}',
            '\u{7F}',
            '\u{AD}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2060}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{E0041}',
        ] {
            for raw in [
                format!("ad{invisible}min@shop.local"),
                format!("{invisible}admin@shop.local"),
                format!("admin@shop.local{invisible}"),
            ] {
                let message = refused("email", &raw, Email::parse("email", &raw));
                assert!(
                    message.contains("invisible or control character"),
                    "{raw:?} gave {message:?}"
                );
            }
        }
        // Line breaks at either end are trimmed like spaces; inside, they are refused.
        let raw = "ad\u{85}min@shop.local";
        refused("email", raw, Email::parse("email", raw));
    }

    #[test]
    fn an_email_needs_a_domain_with_a_dot_and_well_formed_labels() {
        for raw in [
            "a@b",
            "a@localhost",
            "a@b.",
            "a@.b",
            "a@b..c",
            "a@-b.c",
            "a@b-.c",
            "a@b.c-",
            "a@b_c.d",
            "a@[127.0.0.1]",
            "a@b.c:80",
        ] {
            let message = refused("email", raw, Email::parse("email", raw));
            assert!(message.contains("domain"), "{raw:?} gave {message:?}");
        }
        let long_label = format!("a@{}.com", "b".repeat(64));
        refused("email", &long_label, Email::parse("email", &long_label));
        assert_eq!(email("a@b.c").as_str(), "a@b.c");
        assert_eq!(email("a@x-1.y2.z").as_str(), "a@x-1.y2.z");
    }

    #[test]
    fn an_email_local_part_holds_only_the_characters_an_address_may() {
        for raw in [
            "a<b@c.de",
            "\"ada\"@c.de",
            "ada(x)@c.de",
            "a,b@c.de",
            "a;b@c.de",
        ] {
            refused("email", raw, Email::parse("email", raw));
        }
    }

    #[test]
    fn a_password_of_only_whitespace_or_with_control_characters_is_refused() {
        let ada = email("ada@example.com");
        let spaces = " ".repeat(12);
        assert_eq!(
            refused(
                "password",
                &spaces,
                Password::parse("password", &spaces, &ada)
            ),
            "password must not be only spaces"
        );
        let ideographic = "\u{3000}".repeat(12);
        refused(
            "password",
            &ideographic,
            Password::parse("password", &ideographic, &ada),
        );
        for raw in [
            "correct horse\u{0}battery",
            "correct horse\nbattery",
            "correct\thorse battery",
            "correct horse battery\u{1B}",
            "\u{7F}correct horse battery",
        ] {
            let message = refused("password", raw, Password::parse("password", raw, &ada));
            assert!(
                message.contains("control character"),
                "{raw:?} gave {message:?}"
            );
        }
        // Characters, not bytes: twelve two-byte letters are long enough, eleven are not.
        assert!(Password::parse("password", &"é".repeat(12), &ada).is_ok());
        refused(
            "password",
            "eleven é",
            Password::parse("password", &"é".repeat(11), &ada),
        );
    }

    #[test]
    fn a_password_that_is_the_email_in_full_width_is_refused() {
        let ada = email("ada@example.com");
        let raw = "ＡＤＡ@example.com";
        assert_eq!(
            refused("password", raw, Password::parse("password", raw, &ada)),
            "password must not be the email address"
        );
    }

    #[test]
    fn display_names_refuse_control_and_invisible_characters() {
        for raw in [
            "Ada\u{0}",
            "Ada\u{1B}[31m",
            "Ada\nLovelace",
            "Ada\rLovelace",
            "Ada\u{7F}",
            "Ada\u{202E}ecalevoL",
            "Ada\u{200B}",
            "\u{200B}",
            "Ada\u{FEFF}",
            "Ada\u{2066}x\u{2069}",
            "Ada\u{2028}Lovelace",
        ] {
            let message = refused("display_name", raw, DisplayName::parse("display_name", raw));
            assert!(
                message.contains("invisible or control character"),
                "{raw:?} gave {message:?}"
            );
        }
    }

    #[test]
    fn display_names_are_normalised_trimmed_and_1_to_100_characters() {
        let name = |raw: &str| {
            DisplayName::parse("display_name", raw)
                .map(|n| n.as_str().to_owned())
                .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
        };
        assert_eq!(name("  Ada Lovelace \n"), "Ada Lovelace");
        assert_eq!(name("Ａｄａ"), "Ada");
        assert_eq!(name("Zoë Müller"), "Zoë Müller");
        assert_eq!(name("Zoe\u{308}"), "Zoë");
        assert_eq!(name("李小龍"), "李小龍");
        assert_eq!(name(&"é".repeat(100)).chars().count(), 100);
        // One hundred letters with their accents apart are one hundred after composing.
        assert_eq!(name(&"e\u{301}".repeat(100)).chars().count(), 100);
        for raw in ["", "   ", "\u{3000}"] {
            assert_eq!(
                refused("display_name", raw, DisplayName::parse("display_name", raw)),
                "display_name must be 1 to 100 characters"
            );
        }
        let long = "é".repeat(101);
        refused(
            "display_name",
            &long,
            DisplayName::parse("display_name", &long),
        );
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
