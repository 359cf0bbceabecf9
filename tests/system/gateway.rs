//! The REST edge: the gateway of a running system, driven over plain HTTP (and by curl, running
//! the README's own example), checked for each error class, tokens, rate limits, request ids
//! and CORS.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestSystem, http1, spawn_system};

/// One request to the gateway; the body as JSON (or `Null` when it is not JSON).
pub(crate) async fn call(
    gateway: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: impl Into<Bytes>,
) -> anyhow::Result<(StatusCode, HeaderMap, Value)> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (status, headers, body) = http1(request.body(Full::new(body.into()))?).await?;
    Ok((
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

pub(crate) async fn login(gateway: SocketAddr, email: &str) -> anyhow::Result<String> {
    let credentials = json!({"email": email, "password": "a long enough password"});
    let account =
        json!({"email": email, "password": "a long enough password", "displayName": "Tester"});
    let (status, _, body) = call(
        gateway,
        Method::POST,
        "/v1/users:register",
        None,
        account.to_string(),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "register: {status} {body}");
    let (status, _, body) = call(
        gateway,
        Method::POST,
        "/v1/auth/login",
        None,
        credentials.to_string(),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "login: {status} {body}");
    Ok(body["tokens"]["accessToken"]
        .as_str()
        .context("no access token")?
        .to_owned())
}

/// The README's curl block, run by bash against this system.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_checkout_with_curl_alone_ends_confirmed() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let block = readme
        .split("<!-- gateway-checkout:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- gateway-checkout:end -->").next())
        .context("the README has no gateway checkout block")?;
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```");
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("GW", format!("http://{}", system.endpoints.gateway))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("is ORDER_STATUS_CONFIRMED"), "{stdout}");
    assert!(stdout.contains("PAYMENT_STATUS_SUCCEEDED"), "{stdout}");
    assert!(
        stdout.contains("\"sku\":\"KITCHEN-001\""),
        "browsing worked: {stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_error_class_has_its_status_and_body() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let gw = system.endpoints.gateway;
    let token = login(gw, "errors@example.com").await?;
    let missing = uuid::Uuid::new_v4();
    // (method, path, token, body, HTTP status, gRPC code, part of the message)
    type Case<'a> = (Method, String, Option<&'a str>, String, u16, i64, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (Method::POST, "/v1/orders".into(), Some(&token), "{\"items\":".into(), 400, 3, "the body is not valid JSON"),
        (Method::POST, "/v1/orders".into(), Some(&token), json!({"items":[{"unitPrice":5}]}).to_string(), 400, 3, "items[0]: unrecognized field name 'unitPrice'"),
        (Method::POST, "/v1/orders".into(), Some(&token), json!({"items":[{"quantity":"many"}]}).to_string(), 400, 3, "items[0].quantity:"),
        (Method::GET, "/v1/products?page_size=lots".into(), None, String::new(), 400, 3, "page_size must be a 32-bit integer"),
        (Method::GET, "/v1/products?colour=red".into(), None, String::new(), 400, 3, "colour is not a field of ListProductsRequest"),
        // From the service, mapped: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED.
        (Method::GET, "/v1/products?pageSize=1000".into(), None, String::new(), 400, 3, "page_size must be between 1 and 100"),
        (Method::GET, format!("/v1/products/{missing}"), None, String::new(), 404, 5, "not found"),
        (Method::POST, "/v1/users:register".into(), None, json!({"email":"errors@example.com","password":"a long enough password","displayName":"Again"}).to_string(), 409, 6, "already exists"),
        (Method::POST, "/v1/products".into(), Some(&token), json!({"sku":"X-1","name":"X","category":"c","price":{"amountMinor":"1","currency":"EUR"}}).to_string(), 403, 7, "requires the role admin"),
        (Method::GET, "/v2/nothing".into(), None, String::new(), 404, 5, "no route for GET /v2/nothing"),
        (Method::PUT, format!("/v1/products/{missing}"), None, String::new(), 405, 12, "PUT is not allowed"),
        (Method::POST, "/v1/auth/login".into(), None, "x".repeat(1024 * 1024 + 1), 400, 3, "larger than the gateway's limit"),
    ];
    for (method, path, token, body, status, code, message) in cases {
        let what = format!("{method} {path}");
        let (got, headers, body) = call(gw, method, &path, token, body).await?;
        assert_eq!(got.as_u16(), status, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        let text = body["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{what}: {text:?} lacks {message:?}");
        assert_eq!(body["details"], json!([]), "{what}");
        if status == 405 {
            assert_eq!(
                headers.get("allow").map(|v| v.as_bytes()),
                Some(&b"GET, PATCH, DELETE"[..])
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protected_routes_need_a_valid_token_public_ones_do_not() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let gw = system.endpoints.gateway;
    let token = login(gw, "tokens@example.com").await?;
    let forged = format!("{}x", &token[..token.len() - 1]);
    for (token, message) in [
        (None, "missing bearer token"),
        (Some("not-a-jwt"), "invalid or expired token"),
        (Some(forged.as_str()), "invalid or expired token"),
    ] {
        let (status, _, body) = call(gw, Method::GET, "/v1/orders", token, "").await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body, json!({"code": 16, "message": message, "details": []}));
    }
    let (status, _, body) = call(gw, Method::GET, "/v1/users/me", Some(&token), "").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user"]["email"], "tokens@example.com");
    let (status, _, body) = call(gw, Method::GET, "/.well-known/jwks.json", None, "").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keys"][0]["kty"], "RSA");
    assert_eq!(body["keys"][0]["alg"], "RS256");
    Ok(())
}

/// A second gateway on the same system with a tight limit: 3 per second.
async fn limited_gateway(
    system: &TestSystem,
    dir: &tempfile::TempDir,
) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let kong = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kong/kong.yaml"))?;
    let tight = kong.replace(
        "      second: 50\n      minute: 1200\n",
        "      second: 3\n",
    );
    anyhow::ensure!(
        tight != kong,
        "the rate-limiting block of kong.yaml changed"
    );
    let path = dir.path().join("kong.yaml");
    std::fs::write(&path, tight)?;
    let e = system.endpoints;
    let mut config = gateway::Config::local(
        "127.0.0.1:0".parse()?,
        &[
            ("user-service", format!("http://{}", e.user)),
            ("product-service", format!("http://{}", e.product)),
            ("order-service", format!("http://{}", e.order)),
            ("payment-service", format!("http://{}", e.payment)),
        ],
    );
    config.kong_config = Some(path);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(gateway::serve(
        config,
        shop_common::service::Start::new(listener, stop.clone()),
    ));
    Ok((addr, stop))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_trips_and_recovers() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let dir = tempfile::tempdir()?;
    let (gw, stop) = limited_gateway(&system, &dir).await?;
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) =
            call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers.get("ratelimit-remaining").map(|v| v.as_bytes()),
            Some(remaining.as_bytes())
        );
        assert_eq!(
            headers.get("ratelimit-limit").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }
    let (status, headers, body) =
        call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], 8);
    assert_eq!(
        headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    // Waiting is the point here: a second refills the bucket.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
    assert_eq!(status, StatusCode::OK, "recovered after the window");
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_cors_and_metrics() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let gw = system.endpoints.gateway;
    let request = http::Request::get(format!("http://{gw}/v1/products?pageSize=1"))
        .header("x-request-id", "trace-me-42")
        .header("origin", "http://localhost:3000")
        .body(Full::default())?;
    let (status, headers, _) = http1(request).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"trace-me-42"[..])
    );
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"http://localhost:3000"[..])
    );
    let (_, headers, _) = call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
    let made = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        uuid::Uuid::parse_str(made).is_ok(),
        "a new id is a UUID: {made:?}"
    );

    let preflight = http::Request::options(format!("http://{gw}/v1/orders"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .body(Full::default())?;
    let (status, headers, _) = http1(preflight).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let methods = headers
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok());
    assert!(methods.unwrap_or_default().contains("POST"), "{methods:?}");
    let foreign = http::Request::get(format!("http://{gw}/v1/products?pageSize=1"))
        .header("origin", "http://evil.example")
        .body(Full::default())?;
    let (_, headers, _) = http1(foreign).await?;
    assert!(headers.get("access-control-allow-origin").is_none());

    // Kong's metrics are on the metrics port only: the public port does not route `/metrics`.
    let (status, _) = crate::helpers::http_get(&format!("http://{gw}/metrics")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let metrics_url = format!("http://{}/metrics", system.endpoints.metrics);
    let (status, metrics) = crate::helpers::http_get(&metrics_url).await?;
    assert_eq!(status, StatusCode::OK);
    let series =
        r#"kong_http_requests_total{code="200",route="product-browse",service="product-service"}"#;
    let count = crate::helpers::sample(&metrics, series).context("no request counter")?;
    assert!(count >= 2.0, "{count}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shop_load_reports_what_it_sent() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let gw = system.endpoints.gateway;
    let (_, _, listed) = call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
    let id = listed["products"][0]["productId"]
        .as_str()
        .context("no product")?;
    let args = shop::load::LoadArgs {
        url: format!("http://{gw}/v1/products/{id}"),
        concurrency: 2,
        duration: Duration::from_millis(300),
        headers: vec!["X-Request-ID: load".to_owned()],
    };
    let report = shop::load::run(&args).await?;
    assert!(report.ok > 0, "{report}");
    assert_eq!(report.failed, 0, "{report}");
    // Beyond 50 per second the gateway's rate limit answers 429: counted, not hidden.
    assert_eq!(report.requests, report.ok + report.not_ok, "{report}");
    assert!(report.p50 <= report.max, "{report}");

    let bad = shop::load::LoadArgs {
        url: "https://example.com".to_owned(),
        ..args
    };
    let error = shop::load::run(&bad).await.err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("--url: only http:// URLs are supported")
    );
    Ok(())
}

/// REST PATCH carries a FieldMask: from `?updateMask=` as given, else derived from the body's
/// keys, so a zero value (stock 0) is applied rather than read as "not sent".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patch_applies_zero_values_and_honours_an_update_mask_from_the_query() -> anyhow::Result<()>
{
    let system = spawn_system().await?;
    let gw = system.endpoints.gateway;
    let (_, email, password) = shop::up::DEMO_ACCOUNTS
        .into_iter()
        .find(|(role, _, _)| *role == "admin")
        .context("no demo admin")?;
    let credentials = json!({"email": email, "password": password}).to_string();
    let (status, _, body) = call(gw, Method::POST, "/v1/auth/login", None, credentials).await?;
    anyhow::ensure!(status == StatusCode::OK, "login: {status} {body}");
    let admin = body["tokens"]["accessToken"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let (_, _, listed) = call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
    let before = &listed["products"][0];
    let id = before["productId"].as_str().context("no product")?;
    let path = format!("/v1/products/{id}");
    assert_ne!(
        before["stock"],
        json!(0),
        "the demo product starts in stock"
    );

    // (a) No mask: the body's keys are the mask, so stock 0 is not dropped.
    let patch = json!({"version": before["version"], "stock": 0}).to_string();
    let (status, _, body) = call(gw, Method::PATCH, &path, Some(&admin), patch).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, read) = call(gw, Method::GET, &path, None, "").await?;
    let product = &read["product"];
    // proto3 JSON leaves zero out: no `stock` is stock 0.
    assert_eq!(
        product.get("stock").and_then(Value::as_i64),
        None,
        "{product}"
    );
    assert_eq!(product["name"], before["name"], "{product}");

    // (b) An explicit mask: only stock changes, the name in the body is ignored.
    let patch = json!({"version": product["version"], "stock": 7, "name": "Renamed"}).to_string();
    let masked = format!("{path}?updateMask=stock");
    let (status, _, body) = call(gw, Method::PATCH, &masked, Some(&admin), patch).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, read) = call(gw, Method::GET, &path, None, "").await?;
    let product = &read["product"];
    assert_eq!(product["stock"], json!(7), "{product}");
    assert_eq!(product["name"], before["name"], "{product}");

    // (c) A path the service does not know is its to refuse, naming the mask.
    let patch = json!({"version": product["version"], "stock": 1}).to_string();
    let bogus = format!("{path}?updateMask=bogus");
    let (status, _, body) = call(gw, Method::PATCH, &bogus, Some(&admin), patch).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("update_mask"), "{body}");
    // A malformed mask is the gateway's to refuse, naming the query parameter.
    let patch = json!({"version": product["version"], "stock": 1}).to_string();
    let malformed = format!("{path}?updateMask=stock,,name");
    let (status, _, body) = call(gw, Method::PATCH, &malformed, Some(&admin), patch).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("updateMask "), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_routes_have_their_own_tighter_budget_per_ip() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let gw = system.endpoints.gateway;
    // kong.yaml gives /v1/auth/* 5 a second and 30 a minute per IP; a bogus refresh token is
    // refused fast, so 40 in a row must run into the limit whatever the machine's speed.
    let body = r#"{"refreshToken":"not-a-token"}"#;
    let mut limited = None;
    for _ in 0..40 {
        let (status, headers, answer) =
            call(gw, Method::POST, "/v1/auth/refresh", None, body).await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((headers, answer));
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    }
    let (headers, answer) = limited.context("40 sign-in calls from one IP were never limited")?;
    assert_eq!(answer["code"], 8);
    assert!(headers.get("retry-after").is_some(), "{headers:?}");
    assert_eq!(
        headers.get("ratelimit-limit").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    // The rest of the API keeps its own, larger budget.
    let (status, _, _) = call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}
