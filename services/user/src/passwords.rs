//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane). Hashing runs on
//! the blocking pool, so a burst of logins does not stall the runtime's workers.

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _,
    password_hash::{SaltString, rand_core::OsRng},
};
use shop_common::Error;

#[derive(Clone)]
pub(crate) struct Passwords {
    /// Checked when the email is unknown, so that path costs one hash like a wrong password.
    decoy_hash: Arc<str>,
}

impl Passwords {
    pub(crate) fn new() -> Result<Self, Error> {
        let decoy_hash = hash_now("decoy password nobody has")?;
        Ok(Self {
            decoy_hash: decoy_hash.into(),
        })
    }

    pub(crate) async fn hash(&self, password: &str) -> Result<String, Error> {
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(Error::internal)?
    }

    /// Whether `password` matches `stored`; with no stored hash, checks the decoy and says no.
    pub(crate) async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, Error> {
        let (hash, known) = match stored {
            Some(hash) => (hash.to_owned(), true),
            None => (self.decoy_hash.to_string(), false),
        };
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| Error::internal(e.to_string()))?;
            Ok::<_, Error>(
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(Error::internal)??;
        Ok(known && matches)
    }
}

fn hash_now(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_and_verifies_only_its_password() -> Result<(), Error> {
        let passwords = Passwords::new()?;
        let hash = passwords.hash("correct horse battery").await?;
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            passwords
                .verify("correct horse battery", Some(&hash))
                .await?
        );
        assert!(!passwords.verify("wrong horse battery", Some(&hash)).await?);
        Ok(())
    }

    #[tokio::test]
    async fn without_a_stored_hash_nothing_verifies_not_even_the_decoy() -> Result<(), Error> {
        let passwords = Passwords::new()?;
        assert!(!passwords.verify("decoy password nobody has", None).await?);
        Ok(())
    }
}
