//! The gRPC surface: decode and validate, call the store, encode. Who may call what is the table
//! in [`policy`]; ownership (admin or the account itself) is checked here, per call.

use std::sync::Arc;

use shop_common::{
    Error,
    auth::{Access, Claims, Policy, Role},
    clock::timestamp,
    events::Envelope,
    paging::{Cursor, page, page_size},
};
use shop_proto::{
    events::v1::{UserDeleted, UserRegistered},
    user::v1::{self as pb, user_service_server::UserService},
};
use tonic::{Request, Response, Status};

use crate::{
    NAME,
    clients::ServiceClients,
    domain::{
        DisplayName, Email, NewUser, Password, User, UserChanges, parse_account_roles, role_name,
        user_id,
    },
    passwords::Passwords,
    store::{NewRefreshToken, Rotation, UserStore},
    tokens::{TokenIssuer, hash_refresh_token},
};

/// Said for an unknown email and for a wrong password alike.
const BAD_CREDENTIALS: &str = "email or password is incorrect";
const BAD_REFRESH_TOKEN: &str = "refresh token is invalid, expired or revoked";

const ANY_ACCOUNT: &[Role] = &[Role::Customer, Role::Admin];

/// Every method of the service and who may call it; anything missing is denied.
pub(crate) fn policy() -> Policy {
    let method = |name: &str| format!("/shop.user.v1.UserService/{name}");
    let table = [
        ("Register", Access::Public),
        ("Login", Access::Public),
        ("RefreshToken", Access::Public),
        ("GetJwks", Access::Public),
        // The client secret is the credential here.
        ("IssueServiceToken", Access::Public),
        ("GetMe", Access::Roles(ANY_ACCOUNT)),
        (
            "GetUser",
            Access::Roles(&[Role::Customer, Role::Admin, Role::Service]),
        ),
        ("UpdateUser", Access::Roles(ANY_ACCOUNT)),
        ("DeleteUser", Access::Roles(ANY_ACCOUNT)),
        ("ListUsers", Access::Roles(&[Role::Admin])),
    ]
    .map(|(name, access)| (method(name), access));
    Policy::new(table.iter().map(|(path, access)| (path.as_str(), *access)))
}

pub(crate) struct UserApi {
    pub(crate) store: Arc<dyn UserStore>,
    pub(crate) passwords: Passwords,
    pub(crate) tokens: Arc<TokenIssuer>,
    pub(crate) clients: ServiceClients,
}

impl UserApi {
    /// Creates an account; used by Register and by start-up seeding.
    pub(crate) async fn create_account(
        &self,
        email: Email,
        password: &Password,
        display_name: DisplayName,
        roles: Vec<Role>,
    ) -> Result<User, Error> {
        let new = NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            email,
            display_name,
            roles,
            password_hash: self.passwords.hash(password.expose()).await?,
        };
        let event = Envelope::new(
            "user.registered",
            "user",
            &new.id,
            NAME,
            &UserRegistered {
                user_id: new.id.clone(),
                email: new.email.as_str().to_owned(),
                display_name: new.display_name.as_str().to_owned(),
            },
        );
        self.store.create(&new, &event).await
    }

    async fn issue_pair(&self, user: &User) -> Result<pb::TokenPair, Error> {
        let refresh = self.tokens.refresh_token();
        self.store
            .add_refresh_token(&NewRefreshToken {
                hash: refresh.hash,
                user_id: user.id.clone(),
                family_id: uuid::Uuid::new_v4().to_string(),
                expires_at_ms: self.tokens.refresh_expiry_ms(),
            })
            .await?;
        Ok(self.pair(self.tokens.access_token(user)?, refresh.plain))
    }

    fn pair(&self, access_token: String, refresh_token: String) -> pb::TokenPair {
        pb::TokenPair {
            access_token,
            refresh_token,
            expires_in: i64::try_from(self.tokens.access_ttl.as_secs()).unwrap_or(i64::MAX),
            token_type: "Bearer".to_owned(),
        }
    }

    /// The account `id` if the caller may see it: its owner, an admin or a service. Others get
    /// NOT_FOUND, so account ids cannot be probed.
    async fn visible_user(&self, caller: &Claims, id: &str) -> Result<User, Error> {
        let allowed =
            caller.sub == id || caller.has_role(Role::Admin) || caller.has_role(Role::Service);
        let user = if allowed {
            self.store.get(id).await?
        } else {
            None
        };
        user.ok_or_else(|| Error::NotFound(format!("user {id}")))
    }
}

fn to_pb(user: &User) -> pb::User {
    pb::User {
        user_id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        roles: user
            .roles
            .iter()
            .map(|r| role_name(*r).to_owned())
            .collect(),
        create_time: Some(timestamp(user.created_at_ms)),
        update_time: Some(timestamp(user.updated_at_ms)),
    }
}

/// What UpdateUser should change: the mask's fields, or every non-empty field without a mask.
fn requested_changes(
    update: &pb::User,
    mask: Option<&prost_types::FieldMask>,
) -> Result<UserChanges, Error> {
    let paths: Vec<String> = match mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths.clone(),
        _ => [
            (!update.email.is_empty()).then_some("email"),
            (!update.display_name.is_empty()).then_some("display_name"),
            (!update.roles.is_empty()).then_some("roles"),
        ]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .collect(),
    };
    let mut changes = UserChanges::default();
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "email" => changes.email = Some(Email::parse("user.email", &update.email)?),
            "display_name" => {
                let name = DisplayName::parse("user.display_name", &update.display_name)?;
                changes.display_name = Some(name);
            }
            "roles" => changes.roles = Some(parse_account_roles("user.roles", &update.roles)?),
            other => {
                return Err(Error::invalid(
                    format!("update_mask.paths[{i}]"),
                    format!("{other:?} cannot be changed; use email, display_name or roles"),
                ));
            }
        }
    }
    Ok(changes)
}

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(skip_all, err)]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = request.into_inner();
        let email = Email::parse("email", &req.email)?;
        let password = Password::parse("password", &req.password, &email)?;
        let display_name = DisplayName::parse("display_name", &req.display_name)?;
        let user = self
            .create_account(email, &password, display_name, vec![Role::Customer])
            .await?;
        tracing::info!(user_id = %user.id, "account registered");
        Ok(Response::new(pb::RegisterResponse {
            user: Some(to_pb(&user)),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let req = request.into_inner();
        // No validation message here: it would tell a malformed email from an unknown one.
        let email = req.email.trim().to_lowercase();
        let found = self.store.credentials(&email).await?;
        let hash = found.as_ref().map(|(_, hash)| hash.as_str());
        let matches = self.passwords.verify(&req.password, hash).await?;
        let user = match found {
            Some((user, _)) if matches => user,
            _ => return Err(Status::unauthenticated(BAD_CREDENTIALS)),
        };
        let tokens = self.issue_pair(&user).await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(tokens),
            user: Some(to_pb(&user)),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let presented = hash_refresh_token(request.get_ref().refresh_token.trim());
        let next = self.tokens.refresh_token();
        let rotation = self
            .store
            .rotate_refresh_token(&presented, &next.hash, self.tokens.refresh_expiry_ms())
            .await?;
        let Rotation::Rotated(user) = rotation else {
            return Err(Status::unauthenticated(BAD_REFRESH_TOKEN));
        };
        let access = self.tokens.access_token(&user)?;
        Ok(Response::new(pb::RefreshTokenResponse {
            tokens: Some(self.pair(access, next.plain)),
        }))
    }

    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::GetMeResponse>, Status> {
        let caller = Claims::of(&request)?;
        let user = self.visible_user(&caller, &caller.sub).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(to_pb(&user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = Claims::of(&request)?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        let user = self.visible_user(&caller, &id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(to_pb(&user)),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = Claims::of(&request)?;
        let req = request.into_inner();
        let update = req
            .user
            .ok_or_else(|| Error::invalid("user", "is required"))?;
        let id = user_id("user.user_id", &update.user_id)?;
        let mut changes = requested_changes(&update, req.update_mask.as_ref())?;
        if changes.roles.is_some() && !caller.has_role(Role::Admin) {
            return Err(Error::PermissionDenied("only an admin may change roles".into()).into());
        }
        let current = self.visible_user(&caller, &id).await?;
        if !req.new_password.is_empty() {
            let email_after = match &changes.email {
                Some(email) => email.clone(),
                None => Email::parse("user.email", &current.email)?,
            };
            let password = Password::parse("new_password", &req.new_password, &email_after)?;
            changes.password_hash = Some(self.passwords.hash(password.expose()).await?);
        }
        if changes.email.is_none()
            && changes.display_name.is_none()
            && changes.roles.is_none()
            && changes.password_hash.is_none()
        {
            return Err(Error::invalid(
                "update_mask",
                "names nothing to change and no new_password is given",
            )
            .into());
        }
        let user = self
            .store
            .update(&id, &changes)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id}")))?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(to_pb(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size("page_size", req.page_size)?;
        let after = Cursor::decode("page_token", &req.page_token)?;
        let users = self.store.list(after.as_ref(), limit + 1).await?;
        let (users, next_page_token) = page(users, limit, |u| Cursor {
            created_at_ms: u.created_at_ms,
            id: u.id.clone(),
        });
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = Claims::of(&request)?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        if caller.sub != id && !caller.has_role(Role::Admin) {
            return Err(Error::NotFound(format!("user {id}")).into());
        }
        let event = Envelope::new(
            "user.deleted",
            "user",
            &id,
            NAME,
            &UserDeleted {
                user_id: id.clone(),
            },
        );
        if !self.store.delete(&id, &event).await? {
            return Err(Error::NotFound(format!("user {id}")).into());
        }
        tracing::info!(user_id = %id, deleted_by = %caller.sub, "account deleted");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            keys: shop_common::auth::jwks::to_proto(self.tokens.keys.jwks()),
        }))
    }

    #[tracing::instrument(skip_all, fields(client_id = %request.get_ref().client_id), err)]
    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::IssueServiceTokenResponse>, Status> {
        let req = request.into_inner();
        if !self.clients.verify(&req.client_id, &req.client_secret) {
            return Err(Status::unauthenticated("unknown client or wrong secret"));
        }
        Ok(Response::new(pb::IssueServiceTokenResponse {
            access_token: self.tokens.service_token(&req.client_id)?,
            expires_in: i64::try_from(self.tokens.service_ttl.as_secs()).unwrap_or(i64::MAX),
        }))
    }
}
