//! What a token says about its bearer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
    /// Another service of the mesh, calling on its own behalf.
    Service,
}

/// The claims user-service puts in every access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (or the service client id).
    pub sub: String,
    #[serde(default)]
    pub email: String,
    pub roles: Vec<Role>,
    pub iss: String,
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    pub iat: u64,
    /// Token id, unique per token.
    pub jti: String,
}

impl Claims {
    /// The caller of a call the auth layer let through; UNAUTHENTICATED when there is none (a
    /// public method called without a token).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("missing bearer token"))
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the caller may see what `owner` owns: the owner and admins may.
    pub fn may_see(&self, owner: &str) -> bool {
        self.sub == owner || self.has_role(Role::Admin)
    }

    /// Whose records a listing shows: the caller's own (`Some(id)`), or everyone's (`None`)
    /// when an admin asks for all users.
    pub fn list_scope(&self, all_users: bool) -> Option<String> {
        let everyone = all_users && self.has_role(Role::Admin);
        (!everyone).then(|| self.sub.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(sub: &str, roles: &[Role]) -> Claims {
        Claims {
            sub: sub.to_owned(),
            email: String::new(),
            roles: roles.to_vec(),
            iss: String::new(),
            aud: String::new(),
            exp: 0,
            iat: 0,
            jti: String::new(),
        }
    }

    #[test]
    fn owners_and_admins_see_a_record_and_nobody_else() {
        assert!(caller("u1", &[Role::Customer]).may_see("u1"));
        assert!(!caller("u2", &[Role::Customer]).may_see("u1"));
        assert!(caller("a1", &[Role::Customer, Role::Admin]).may_see("u1"));
    }

    #[test]
    fn only_an_admin_asking_for_all_users_lists_everyone() {
        let customer = caller("u1", &[Role::Customer]);
        assert_eq!(customer.list_scope(true), Some("u1".to_owned()));
        assert_eq!(customer.list_scope(false), Some("u1".to_owned()));
        let admin = caller("a1", &[Role::Admin]);
        assert_eq!(admin.list_scope(true), None);
        assert_eq!(admin.list_scope(false), Some("a1".to_owned()));
    }
}
