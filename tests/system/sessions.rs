//! `shop up` keeps its generated signing key in the data dir, so a restart on the same data dir
//! does not sign everyone out.

use shop::up::{self, UpArgs};
use shop_proto::user::v1::{GetMeRequest, LoginRequest, user_service_client::UserServiceClient};
use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::helpers::channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_access_token_from_before_a_restart_still_works_after_it() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let args = UpArgs::ephemeral(data.path());

    let shutdown = CancellationToken::new();
    let system = up::start(&args, None, shutdown.clone()).await?;
    let mut users = UserServiceClient::new(channel(system.endpoints.user).await?);
    let login = users
        .login(LoginRequest {
            email: shop::up::DEMO_ACCOUNTS[1].1.to_owned(),
            password: shop::up::DEMO_ACCOUNTS[1].2.to_owned(),
        })
        .await?
        .into_inner();
    let token = login.tokens.map(|t| t.access_token).unwrap_or_default();
    anyhow::ensure!(!token.is_empty(), "login returned no access token");
    shutdown.cancel();
    system.wait().await?;

    let shutdown = CancellationToken::new();
    let system = up::start(&args, None, shutdown.clone()).await?;
    let mut users = UserServiceClient::new(channel(system.endpoints.user).await?);
    let mut me = Request::new(GetMeRequest {});
    me.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let found = users.get_me(me).await?.into_inner();
    assert_eq!(
        found.user.map(|u| u.email).as_deref(),
        Some(shop::up::DEMO_ACCOUNTS[1].1)
    );
    shutdown.cancel();
    system.wait().await?;
    Ok(())
}
