//! Guessing a password over gRPC: failed sign-ins slow the next ones per account and client, the
//! right password is refused while the delay runs, and the owner signing in from another client
//! is not locked out.

use shop_proto::user::v1 as pb;
use tonic::{Code, Request};

use crate::helpers::{App, Backend};

const PASSWORD: &str = "the right horse battery staple";

/// A sign-in as if relayed by the gateway for `client` (it appends the client's address to
/// `x-forwarded-for`).
async fn login_from(app: &App, client: &str, password: &str) -> Result<(), tonic::Status> {
    let mut request = Request::new(pb::LoginRequest {
        email: "victim@example.com".to_owned(),
        password: password.to_owned(),
    });
    let forwarded = format!("203.0.113.9, {client}")
        .parse()
        .map_err(|_| tonic::Status::internal("bad test header"))?;
    request.metadata_mut().insert("x-forwarded-for", forwarded);
    app.client.clone().login(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_wrong_passwords_then_the_right_one_is_refused_but_not_for_the_owner_elsewhere()
-> anyhow::Result<()> {
    let Some(app) = App::spawn(Backend::Sqlite).await? else {
        return Ok(());
    };
    app.register("victim@example.com", PASSWORD).await?;

    let mut codes = Vec::new();
    for i in 0..60 {
        let answer = login_from(&app, "198.51.100.7", &format!("guess number {i}")).await;
        codes.push(answer.map_or_else(|s| s.code(), |()| Code::Ok));
    }
    // The first five are checked (and wrong); after them the attacker is made to wait.
    assert!(
        codes[..5].iter().all(|c| *c == Code::Unauthenticated),
        "{codes:?}"
    );
    assert!(codes[5..].contains(&Code::ResourceExhausted), "{codes:?}");

    let right = login_from(&app, "198.51.100.7", PASSWORD).await;
    let refused = right
        .err()
        .map(|s| (s.code(), s.message().to_owned(), s.metadata().clone()));
    let Some((code, message, metadata)) = refused else {
        anyhow::bail!("the right password went through straight after 60 wrong ones");
    };
    assert_eq!(code, Code::ResourceExhausted);
    assert!(
        message.starts_with("too many failed sign-ins; try again in "),
        "{message}"
    );
    let seconds = metadata
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(seconds.is_some_and(|s| s >= 1), "{metadata:?}");

    // The owner, from their own address, still gets in.
    login_from(&app, "192.0.2.44", PASSWORD).await?;
    app.stop().await?;
    Ok(())
}
