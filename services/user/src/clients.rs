//! Service clients (order-service, …) that may obtain a `service` token. Secrets are compared as
//! SHA-256 digests in constant time, so response times say nothing about how much matched.

use sha2::{Digest as _, Sha256};
use shop_common::config::Secret;
use subtle::ConstantTimeEq as _;

#[derive(Default)]
pub(crate) struct ServiceClients {
    clients: Vec<(String, [u8; 32])>,
}

impl ServiceClients {
    pub(crate) fn new(clients: &[(String, Secret)]) -> Self {
        Self {
            clients: clients
                .iter()
                .map(|(id, secret)| (id.clone(), digest(secret.expose())))
                .collect(),
        }
    }

    pub(crate) fn verify(&self, client_id: &str, secret: &str) -> bool {
        let presented = digest(secret);
        let mut accepted = false;
        // Every entry is compared, matching id or not.
        for (id, expected) in &self.clients {
            let secret_matches: bool = expected.ct_eq(&presented).into();
            accepted |= id == client_id && secret_matches;
        }
        accepted
    }

    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_pair_is_accepted() {
        let clients = ServiceClients::new(&[
            (
                "order-service".into(),
                Secret::new("order-secret-0123456789"),
            ),
            (
                "payment-service".into(),
                Secret::new("payment-secret-0123456789"),
            ),
        ]);
        assert!(clients.verify("order-service", "order-secret-0123456789"));
        assert!(!clients.verify("order-service", "payment-secret-0123456789"));
        assert!(!clients.verify("order-service", ""));
        assert!(!clients.verify("stranger", "order-secret-0123456789"));
    }
}
