//! The gRPC surface: decode and validate, call [`Accounts`], encode. Who may call what is the
//! table in [`policy`].

use shop_common::{
    Error,
    auth::{Access, Claims, Policy, Role},
    clock::timestamp,
    paging::{Cursor, page, page_size},
};
use shop_proto::user::v1::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};

use crate::{
    accounts::{Accounts, TokenPair},
    domain::{
        DisplayName, Email, Password, User, UserChanges, parse_account_roles, role_name, user_id,
    },
};

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
    pub(crate) accounts: Accounts,
}

fn pair_to_pb(pair: TokenPair) -> pb::TokenPair {
    pb::TokenPair {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        expires_in: i64::try_from(pair.expires_in.as_secs()).unwrap_or(i64::MAX),
        token_type: "Bearer".to_owned(),
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
    #[tracing::instrument(skip_all)]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = request.into_inner();
        let email = Email::parse("email", &req.email)?;
        let password = Password::parse("password", &req.password, &email)?;
        let display_name = DisplayName::parse("display_name", &req.display_name)?;
        let user = self
            .accounts
            .register(email, &password, display_name, vec![Role::Customer])
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(to_pb(&user)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        // No validation message here: it would tell a malformed email from an unknown one.
        let client = client_of(&request);
        let req = request.into_inner();
        let (user, tokens) = self
            .accounts
            .login(&req.email, &req.password, &client)
            .await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(pair_to_pb(tokens)),
            user: Some(to_pb(&user)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let tokens = self
            .accounts
            .refresh(&request.get_ref().refresh_token)
            .await?;
        Ok(Response::new(pb::RefreshTokenResponse {
            tokens: Some(pair_to_pb(tokens)),
        }))
    }

    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::GetMeResponse>, Status> {
        let caller = Claims::of(&request)?;
        let user = self.accounts.visible(&caller, &caller.sub).await?;
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
        let user = self.accounts.visible(&caller, &id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(to_pb(&user)),
        }))
    }

    #[tracing::instrument(skip_all)]
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
        let changes = requested_changes(&update, req.update_mask.as_ref())?;
        let user = self
            .accounts
            .update(&caller, &id, changes, &req.new_password)
            .await?;
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
        let users = self.accounts.list(after.as_ref(), limit + 1).await?;
        let (users, next_page_token) = page(users, limit, |u| Cursor {
            created_at_ms: u.created_at_ms,
            id: u.id.clone(),
        });
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = Claims::of(&request)?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        self.accounts.delete(&caller, &id).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            keys: shop_common::auth::jwks::to_proto(self.accounts.jwks()),
        }))
    }

    #[tracing::instrument(skip_all, fields(client_id = %request.get_ref().client_id))]
    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::IssueServiceTokenResponse>, Status> {
        let req = request.into_inner();
        let (access_token, ttl) = self
            .accounts
            .service_token(&req.client_id, &req.client_secret)?;
        Ok(Response::new(pb::IssueServiceTokenResponse {
            access_token,
            expires_in: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        }))
    }
}

/// Who is signing in, for the throttle: the address the nearest proxy saw (the last
/// `x-forwarded-for` entry, which Kong or the gateway appended), else the connection's peer.
/// A direct caller can write its own `x-forwarded-for`; that only moves it to another
/// per-client count, and the per-account count still holds.
fn client_of<T>(request: &Request<T>) -> String {
    let forwarded = request
        .metadata()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match (forwarded, request.remote_addr()) {
        (Some(address), _) => address.to_owned(),
        (None, Some(peer)) => peer.ip().to_string(),
        (None, None) => "unknown".to_owned(),
    }
}
