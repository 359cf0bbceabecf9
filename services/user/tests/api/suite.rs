//! What user-service promises, written once and run on each backend.

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message as _;
use rsa::{
    RsaPrivateKey,
    pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding},
};
use std::sync::Arc;

use shop_common::{
    auth::{JwksClient, Role, ServiceToken, Verifier, forward_token},
    config::{JwtArgs, Secret},
    tls::ClientTls,
};
use shop_proto::{
    events::v1::{UserDeleted, UserRegistered, UserSessionsRevoked},
    user::v1 as pb,
};
use tonic::Code;

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, App, Backend, CLIENT_ID, CLIENT_SECRET, bearer, claims_for,
    key_pem, kid_of, pyjwt_python, sign,
};

const PASSWORD: &str = "correct horse battery";

fn code<T>(result: Result<T, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

pub(crate) async fn register_login_me_and_refresh_then_reusing_a_spent_refresh_token_revokes_its_family(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    let ada = app.register("  Ada@Example.com ", PASSWORD).await?;
    assert_eq!(ada.email, "ada@example.com");
    assert_eq!(ada.roles, ["customer"]);

    let first = app.login("ada@example.com", PASSWORD).await?;
    assert_eq!(
        (first.token_type.as_str(), first.expires_in),
        ("Bearer", 900)
    );
    assert_eq!(app.me(&first.access_token).await?.user_id, ada.user_id);

    let second = app.refresh(&first.refresh_token).await?;
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(app.me(&second.access_token).await?.user_id, ada.user_id);

    // Another device's session is a family of its own.
    let other_device = app.login("ada@example.com", PASSWORD).await?;

    // The spent token comes back (stolen): refused, and the whole family dies with it.
    let reuse = app.refresh(&first.refresh_token).await;
    assert_eq!(
        code(reuse),
        (
            Code::Unauthenticated,
            "refresh token is invalid, expired or revoked".to_owned()
        )
    );
    assert_eq!(
        code(app.refresh(&second.refresh_token).await).0,
        Code::Unauthenticated,
        "the live token of a revoked family must be refused"
    );
    assert!(app.refresh(&other_device.refresh_token).await.is_ok());
    assert_eq!(
        code(app.refresh("not-a-token").await).0,
        Code::Unauthenticated
    );

    let registered = app.events.wait_for("user.registered", 2).await?;
    let payloads: Vec<UserRegistered> = registered
        .iter()
        .map(|e| UserRegistered::decode(e.0.payload.as_slice()))
        .collect::<Result<_, _>>()?;
    assert!(
        payloads
            .iter()
            .any(|p| p.user_id == ada.user_id && p.email == "ada@example.com"),
        "{payloads:?}"
    );
    app.stop().await?;
    Ok(())
}

pub(crate) async fn registration_and_login_errors_are_clear_and_do_not_tell_unknown_emails_apart(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    app.register("ada@example.com", PASSWORD).await?;
    let mut client = app.client.clone();
    let register = |email: &str, password: &str, name: &str| {
        let request = pb::RegisterRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            display_name: name.to_owned(),
        };
        let mut client = client.clone();
        async move { code(client.register(request).await) }
    };
    assert_eq!(
        register("ADA@example.com", PASSWORD, "Ada").await,
        (
            Code::AlreadyExists,
            "an account with this email already exists".to_owned()
        )
    );
    assert_eq!(
        register("bob@example.com", "short", "Bob").await,
        (
            Code::InvalidArgument,
            "password must be at least 12 characters".to_owned()
        )
    );
    assert_eq!(
        register("bob@example.com", "BOB@example.com", "Bob").await,
        (
            Code::InvalidArgument,
            "password must not be the email address".to_owned()
        )
    );
    assert_eq!(
        register("bob", PASSWORD, "Bob").await,
        (
            Code::InvalidArgument,
            "email must be an email address like name@example.com".to_owned()
        )
    );
    assert_eq!(
        register("bob@example.com", PASSWORD, "  ").await,
        (
            Code::InvalidArgument,
            "display_name must be 1 to 100 characters".to_owned()
        )
    );
    // Nothing half-written: bob can still register once his input is right.
    assert_eq!(
        register("bob@example.com", PASSWORD, "Bob").await.0,
        Code::Ok
    );

    let wrong_password = code(app.login("ada@example.com", "not the password").await);
    let unknown_email = code(app.login("nobody@example.com", PASSWORD).await);
    assert_eq!(
        wrong_password,
        (
            Code::Unauthenticated,
            "email or password is incorrect".to_owned()
        )
    );
    assert_eq!(unknown_email, wrong_password);

    // Look-alikes: full-width folds onto ada's address, other scripts and invisibles are refused.
    assert_eq!(
        register("ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ", PASSWORD, "Ada").await,
        (
            Code::AlreadyExists,
            "an account with this email already exists".to_owned()
        )
    );
    assert_eq!(
        register("\u{430}da@example.com", PASSWORD, "Ada").await,
        (
            Code::InvalidArgument,
            "email must use only ASCII letters, digits and symbols; 'а' (U+0430) is not ASCII"
                .to_owned()
        )
    );
    for (email, found) in [
        ("ada\u{200B}@example.com", "U+200B"),
        ("\u{202E}ada@example.com", "U+202E"),
        ("ada\u{0}@example.com", "U+0000"),
    ] {
        assert_eq!(
            register(email, PASSWORD, "Ada").await,
            (
                Code::InvalidArgument,
                format!("email must not contain invisible or control characters (found {found})")
            ),
            "{email:?}"
        );
    }
    assert_eq!(
        register("carol@example", PASSWORD, "Carol").await.0,
        Code::InvalidArgument
    );
    assert_eq!(
        register("carol@example.com", &" ".repeat(12), "Carol").await,
        (
            Code::InvalidArgument,
            "password must not be only spaces".to_owned()
        )
    );
    assert_eq!(
        register("carol@example.com", PASSWORD, "Carol\u{1B}[2J").await,
        (
            Code::InvalidArgument,
            "display_name must not contain invisible or control characters (found U+001B)"
                .to_owned()
        )
    );
    // Login refuses nothing as malformed: a look-alike or a NUL (which PostgreSQL cannot take
    // as a parameter) is just an unknown email, and full-width finds ada's account.
    for email in ["\u{430}da@example.com", "ada\u{0}@example.com"] {
        assert_eq!(
            code(app.login(email, PASSWORD).await),
            wrong_password,
            "{email:?}"
        );
    }
    assert_eq!(
        code(app.login("ａｄａ@example.com", PASSWORD).await).0,
        Code::Ok
    );
    let listed = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .map(|_| ());
    assert_eq!(code(listed).0, Code::Unauthenticated);
    app.stop().await?;
    Ok(())
}

pub(crate) async fn forged_expired_and_foreign_tokens_are_unauthenticated_and_roles_are_enforced(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    let ada = app.register("ada@example.com", PASSWORD).await?;
    let (server_key, foreign_key) = (key_pem(0)?, key_pem(1)?);
    let server_kid = kid_of(server_key)?;
    let valid = claims_for(&ada.user_id, &[Role::Customer]);

    // The forging works: a token with the server's own key is accepted.
    let genuine = sign(server_key, &server_kid, &valid)?;
    assert_eq!(app.me(&genuine).await?.user_id, ada.user_id);

    let mut expired = valid.clone();
    expired.exp -= 3600;
    expired.iat -= 3600;
    let mut wrong_audience = valid.clone();
    wrong_audience.aud = "another-api".to_owned();
    let mut wrong_issuer = valid.clone();
    wrong_issuer.iss = "someone-else".to_owned();

    let header = |json: &str| URL_SAFE_NO_PAD.encode(json);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&valid)?);
    let alg_none = format!("{}.{payload}.", header(r#"{"alg":"none","typ":"JWT"}"#));

    // HS256 keyed with the server's public key: the classic algorithm confusion.
    let public_pem = RsaPrivateKey::from_pkcs8_pem(server_key)?
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)?;
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(server_kid.clone());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &valid,
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
    )?;

    // Admin rights written into a genuine token's payload, signature kept.
    let mut promoted = valid.clone();
    promoted.roles = vec![Role::Admin];
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&promoted)?),
        parts[2]
    );

    let bad_tokens = [
        ("expired", sign(server_key, &server_kid, &expired)?),
        (
            "unknown key",
            sign(foreign_key, &kid_of(foreign_key)?, &valid)?,
        ),
        (
            "foreign key under our kid",
            sign(foreign_key, &server_kid, &valid)?,
        ),
        ("alg none", alg_none),
        ("HS256 with the public key", confused),
        (
            "wrong audience",
            sign(server_key, &server_kid, &wrong_audience)?,
        ),
        (
            "wrong issuer",
            sign(server_key, &server_kid, &wrong_issuer)?,
        ),
        ("tampered payload", tampered),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in bad_tokens {
        assert_eq!(
            code(app.me(&token).await),
            (Code::Unauthenticated, "invalid or expired token".to_owned()),
            "{what}"
        );
    }

    let customer = app.login("ada@example.com", PASSWORD).await?.access_token;
    let listed = app
        .client
        .clone()
        .list_users(bearer(pb::ListUsersRequest::default(), &customer))
        .await;
    let (status, message) = code(listed);
    assert_eq!(status, Code::PermissionDenied, "{message}");
    assert!(message.contains("requires the role admin"), "{message}");
    app.stop().await?;
    Ok(())
}

pub(crate) async fn the_jwks_verifies_issued_tokens_with_pyjwt(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(python) = pyjwt_python() else {
        eprintln!("skipped: PyJWT is missing; run scripts/install-tools.sh");
        return Ok(());
    };
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    let ada = app.register("ada@example.com", PASSWORD).await?;
    let token = app.login("ada@example.com", PASSWORD).await?.access_token;
    let jwks = app.jwks_json().await?;
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["use"], &key["alg"]),
        (&"RSA".into(), &"sig".into(), &"RS256".into())
    );
    let dir = tempfile::tempdir()?;
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, serde_json::to_vec(&jwks)?)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_with_pyjwt.py");
    let verify = |token: &str| {
        std::process::Command::new(&python)
            .arg(script)
            .arg(&jwks_file)
            .args([token, "shop-api", "shop-mesh"])
            .output()
    };

    let out = verify(&token)?;
    assert!(
        out.status.success(),
        "PyJWT refused our token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(claims["sub"], ada.user_id.as_str());
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["roles"], serde_json::json!(["customer"]));

    // The same check fails on a token that is not ours, so its success above means something.
    let forged = sign(
        key_pem(1)?,
        &kid_of(key_pem(0)?)?,
        &claims_for(&ada.user_id, &[]),
    )?;
    let out = verify(&forged)?;
    assert!(!out.status.success(), "PyJWT accepted a forged token");
    app.stop().await?;
    Ok(())
}

pub(crate) async fn a_token_signed_with_the_old_key_still_verifies_after_a_new_key_signs(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    let ada = app.register("ada@example.com", PASSWORD).await?;
    let before = app.login("ada@example.com", PASSWORD).await?;
    let db = app.stop().await?;

    let old_key_file = tempfile::NamedTempFile::new()?;
    std::fs::write(old_key_file.path(), key_pem(0)?)?;
    let new_key = key_pem(1)?.to_owned();
    let old_path = old_key_file.path().to_owned();
    let app = App::spawn_on(db, |config| {
        config.signing_key = Some(new_key);
        config.previous_signing_key_files = vec![old_path];
    })
    .await?;

    assert_eq!(app.me(&before.access_token).await?.user_id, ada.user_id);
    let after = app.refresh(&before.refresh_token).await?;
    let header = jsonwebtoken::decode_header(&after.access_token)?;
    assert_eq!(header.kid, Some(kid_of(key_pem(1)?)?), "the new key signs");
    assert_eq!(app.me(&after.access_token).await?.user_id, ada.user_id);
    let published: Vec<String> = app.jwks_json().await?["keys"]
        .as_array()
        .context("keys")?
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(published, [kid_of(key_pem(1)?)?, kid_of(key_pem(0)?)?]);
    app.stop().await?;
    Ok(())
}

pub(crate) async fn service_clients_get_short_lived_service_tokens(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    let ada = app.register("ada@example.com", PASSWORD).await?;
    let mut client = app.client.clone();
    let issued = client
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(issued.expires_in, 300);
    let payload = issued.access_token.split('.').nth(1).context("not a JWT")?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    assert_eq!(
        (&claims["sub"], &claims["roles"]),
        (&CLIENT_ID.into(), &serde_json::json!(["service"]))
    );
    let fetched = client
        .get_user(bearer(
            pb::GetUserRequest {
                user_id: ada.user_id.clone(),
            },
            &issued.access_token,
        ))
        .await?;
    assert_eq!(
        fetched.into_inner().user.map(|u| u.email).as_deref(),
        Some("ada@example.com")
    );
    let listed = client
        .list_users(bearer(
            pb::ListUsersRequest::default(),
            &issued.access_token,
        ))
        .await;
    assert_eq!(code(listed).0, Code::PermissionDenied);

    for (id, secret) in [
        (CLIENT_ID, "wrong-secret-wrong-secret"),
        ("stranger", CLIENT_SECRET),
    ] {
        let refused = client
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: id.to_owned(),
                client_secret: secret.to_owned(),
            })
            .await;
        assert_eq!(
            code(refused),
            (
                Code::Unauthenticated,
                "unknown client or wrong secret".to_owned()
            )
        );
    }
    app.stop().await?;
    Ok(())
}

pub(crate) async fn accounts_are_managed_by_their_owner_or_an_admin(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    let mut client = app.client.clone();
    let ada = app.register("ada@example.com", PASSWORD).await?;
    let bob = app.register("bob@example.com", PASSWORD).await?;
    let ada_session = app.login("ada@example.com", PASSWORD).await?;
    let ada_token = ada_session.access_token.clone();
    let bob_token = app.login("bob@example.com", PASSWORD).await?.access_token;
    let admin_token = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await?.access_token;
    let get = |id: &str| pb::GetUserRequest {
        user_id: id.to_owned(),
    };

    // Another customer's account does not exist, as far as bob can tell.
    let (status, message) = code(client.get_user(bearer(get(&ada.user_id), &bob_token)).await);
    assert_eq!(
        (status, message),
        (Code::NotFound, format!("user {} not found", ada.user_id))
    );
    assert!(
        client
            .get_user(bearer(get(&ada.user_id), &admin_token))
            .await
            .is_ok()
    );
    let (status, message) = code(client.get_user(bearer(get("42"), &admin_token)).await);
    assert_eq!(
        (status, message.as_str()),
        (Code::InvalidArgument, "user_id must be a UUID")
    );

    let update = |user: pb::User, paths: &[&str], password: &str| pb::UpdateUserRequest {
        user: Some(user),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        new_password: password.to_owned(),
    };
    let renamed = pb::User {
        user_id: ada.user_id.clone(),
        display_name: "Ada Lovelace".to_owned(),
        roles: vec!["admin".to_owned()],
        ..pb::User::default()
    };
    let updated = client
        .update_user(bearer(
            update(renamed.clone(), &["display_name"], ""),
            &ada_token,
        ))
        .await?
        .into_inner()
        .user
        .context("no user")?;
    assert_eq!(
        (updated.display_name.as_str(), updated.roles.as_slice()),
        ("Ada Lovelace", &["customer".to_owned()][..])
    );

    let (status, _) = code(
        client
            .update_user(bearer(update(renamed.clone(), &["roles"], ""), &ada_token))
            .await,
    );
    assert_eq!(
        status,
        Code::PermissionDenied,
        "a customer cannot make herself admin"
    );
    let (status, message) = code(
        client
            .update_user(bearer(
                update(renamed.clone(), &["password_hash"], ""),
                &ada_token,
            ))
            .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.starts_with("update_mask.paths[0]"), "{message}");
    let taken = pb::User {
        user_id: ada.user_id.clone(),
        email: "BOB@example.com".to_owned(),
        ..pb::User::default()
    };
    let (status, _) = code(
        client
            .update_user(bearer(update(taken, &["email"], ""), &ada_token))
            .await,
    );
    assert_eq!(status, Code::AlreadyExists);
    let promoted = client
        .update_user(bearer(update(renamed, &["roles"], ""), &admin_token))
        .await?
        .into_inner()
        .user
        .context("no user")?;
    assert_eq!(promoted.roles, ["admin"]);

    // New roles end her sessions: the token that still says `customer` is refused, and so is
    // her refresh token; signing in again gives a token with the new roles.
    let (status, message) = code(app.me(&ada_token).await);
    assert_eq!(status, Code::Unauthenticated);
    assert!(message.contains("sign in again"), "{message}");
    assert_eq!(
        code(app.refresh(&ada_session.refresh_token).await).0,
        Code::Unauthenticated
    );
    let ada_session = app.login("ada@example.com", PASSWORD).await?;
    let ada_token = ada_session.access_token.clone();
    assert_eq!(app.me(&ada_token).await?.roles, ["admin"]);
    let same_roles = pb::User {
        user_id: ada.user_id.clone(),
        roles: vec!["admin".to_owned()],
        ..pb::User::default()
    };
    client
        .update_user(bearer(update(same_roles, &["roles"], ""), &admin_token))
        .await?;
    assert!(
        app.me(&ada_token).await.is_ok(),
        "the same roles again end nothing"
    );

    // A new password ends every session that existed before it.
    let new_password = "a much better passphrase";
    client
        .update_user(bearer(
            update(
                pb::User {
                    user_id: ada.user_id.clone(),
                    ..pb::User::default()
                },
                &[],
                new_password,
            ),
            &ada_token,
        ))
        .await?;
    assert_eq!(
        code(app.refresh(&ada_session.refresh_token).await).0,
        Code::Unauthenticated
    );
    assert_eq!(code(app.me(&ada_token).await).0, Code::Unauthenticated);
    assert_eq!(
        code(app.login("ada@example.com", PASSWORD).await).0,
        Code::Unauthenticated
    );
    // Signing in right after the answer works: the change answered once its second was over.
    let ada_token = app
        .login("ada@example.com", new_password)
        .await?
        .access_token;
    assert!(app.me(&ada_token).await.is_ok());

    // The admin walks every account, two per page, each exactly once.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_users(bearer(
                pb::ListUsersRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                },
                &admin_token,
            ))
            .await?
            .into_inner();
        seen.extend(page.users.into_iter().map(|u| u.email));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    seen.sort();
    let mut expected = [ADMIN_EMAIL, "ada@example.com", "bob@example.com"];
    expected.sort_unstable();
    assert_eq!(seen, expected);
    for (size, token) in [(0, "garbage"), (101, ""), (-1, "")] {
        let (status, message) = code(
            client
                .list_users(bearer(
                    pb::ListUsersRequest {
                        page_size: size,
                        page_token: token.to_owned(),
                    },
                    &admin_token,
                ))
                .await,
        );
        assert_eq!(status, Code::InvalidArgument, "{size} {token}: {message}");
    }

    let delete = |id: &str| pb::DeleteUserRequest {
        user_id: id.to_owned(),
    };
    let (status, _) = code(
        client
            .delete_user(bearer(delete(&ada.user_id), &bob_token))
            .await,
    );
    assert_eq!(status, Code::NotFound, "bob cannot delete ada");
    client
        .delete_user(bearer(delete(&ada.user_id), &ada_token))
        .await?;
    assert_eq!(
        code(app.login("ada@example.com", new_password).await).0,
        Code::Unauthenticated
    );
    assert_eq!(code(app.me(&ada_token).await).0, Code::Unauthenticated);
    let (status, _) = code(
        client
            .delete_user(bearer(delete(&ada.user_id), &admin_token))
            .await,
    );
    assert_eq!(status, Code::NotFound, "deleting twice");

    let deleted = app.events.wait_for("user.deleted", 1).await?;
    let payload = UserDeleted::decode(deleted[0].0.payload.as_slice())?;
    assert_eq!(payload.user_id, ada.user_id);
    let revoked = app.events.wait_for("user.sessions_revoked", 3).await?;
    let reasons = revoked
        .iter()
        .map(|event| UserSessionsRevoked::decode(event.0.payload.as_slice()))
        .collect::<Result<Vec<_>, _>>()?;
    assert!(reasons.iter().all(|r| r.user_id == ada.user_id));
    assert_eq!(
        reasons
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>(),
        ["roles_changed", "password_changed", "account_deleted"]
    );
    assert_eq!(bob.roles, ["customer"]);
    app.stop().await?;
    Ok(())
}

pub(crate) async fn other_services_fetch_the_jwks_and_their_own_service_token(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(app) = App::spawn(backend).await? else {
        return Ok(());
    };
    let url = format!("http://{}", app.addr);
    let ada = app.register("ada@example.com", PASSWORD).await?;
    let token = app.login("ada@example.com", PASSWORD).await?.access_token;

    // What order-service does at start: fetch the keys, then verify callers' tokens locally.
    let verifier = Arc::new(Verifier::new(&JwtArgs::default().verifier_config()));
    assert!(verifier.verify(&token).is_err(), "no keys yet");
    let jwks = JwksClient::new(
        "USER_SERVICE_URL",
        &url,
        &ClientTls::none(),
        verifier.clone(),
    )?;
    assert_eq!(jwks.fetch().await?, 1);
    assert_eq!(
        verifier.verify(&token).map(|c| c.sub),
        Ok(ada.user_id.clone())
    );

    // Its own calls to internal methods carry a service token, fetched once and reused.
    let service = ServiceToken::new(
        "ORDER_CLIENT_SECRET",
        &url,
        &ClientTls::none(),
        CLIENT_ID,
        Secret::new(CLIENT_SECRET),
    )?;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let mut request = tonic::Request::new(pb::GetUserRequest {
            user_id: ada.user_id.clone(),
        });
        service.authorize(&mut request).await?;
        tokens.push(request.metadata().get("authorization").cloned());
        let user = app
            .client
            .clone()
            .get_user(request)
            .await?
            .into_inner()
            .user;
        assert_eq!(user.map(|u| u.user_id), Some(ada.user_id.clone()));
    }
    assert_eq!(tokens[0], tokens[1], "the cached token is reused");

    // On behalf of a user, the user's own token travels on.
    let incoming = bearer(pb::GetMeRequest {}, &token);
    let mut outgoing = tonic::Request::new(pb::GetMeRequest {});
    forward_token(&incoming, &mut outgoing);
    let me = app.client.clone().get_me(outgoing).await?.into_inner().user;
    assert_eq!(me.map(|u| u.email).as_deref(), Some("ada@example.com"));

    let impostor = ServiceToken::new(
        "X",
        &url,
        &ClientTls::none(),
        CLIENT_ID,
        Secret::new("not-the-secret-at-all"),
    )?;
    let refused = impostor
        .authorize(&mut tonic::Request::new(pb::GetMeRequest {}))
        .await;
    assert_eq!(code(refused).0, Code::Unauthenticated);
    app.stop().await?;
    Ok(())
}
