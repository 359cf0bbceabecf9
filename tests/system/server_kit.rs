//! What every gRPC port of the in-process system offers: reflection (v1 and v1alpha), health,
//! grpc-web over HTTP/1.1, request ids and RED metrics.

use std::time::Duration;

use anyhow::{Context as _, bail};
use http_body_util::Full;
use prost::Message as _;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::{
    channel, health_status, http_get, http1, sample, spawn_system, wait_for_health,
};

async fn list_services_v1(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    use v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    match responses.message().await?.and_then(|r| r.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => bail!("unexpected reflection answer: {other:?}"),
    }
}

async fn list_services_v1alpha(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    use v1alpha::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    match responses.message().await?.and_then(|r| r.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => bail!("unexpected reflection answer: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_served_services_in_both_protocol_versions() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    for addr in [
        system.endpoints.user,
        system.endpoints.product,
        system.endpoints.order,
        system.endpoints.payment,
    ] {
        let channel = channel(addr).await?;
        for services in [
            list_services_v1(channel.clone()).await?,
            list_services_v1alpha(channel.clone()).await?,
        ] {
            for expected in [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ] {
                assert!(
                    services.iter().any(|s| s == expected),
                    "{expected} missing from {services:?}"
                );
            }
        }
    }
    Ok(())
}

/// A grpc-web frame: flag byte, big-endian length, message.
fn grpc_web_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(message);
    frame
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_gets_an_answer() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let addr = system.endpoints.product;
    wait_for_health(
        &channel(addr).await?,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await?;

    let body = grpc_web_frame(&HealthCheckRequest::default().encode_to_vec());
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .version(http::Version::HTTP_11)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let (status, headers, body) = http1(request).await?;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/grpc-web+proto")
    );
    // First frame: the message; then a trailer frame (flag 0x80) carrying grpc-status.
    let (message, rest) = split_frame(&body)?;
    assert_eq!(message.flag, 0);
    let answer = HealthCheckResponse::decode(message.payload)?;
    assert_eq!(answer.status(), ServingStatus::Serving);
    let (trailers, _) = split_frame(rest)?;
    assert_eq!(trailers.flag, 0x80);
    let trailers = String::from_utf8_lossy(trailers.payload);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    Ok(())
}

/// A grpc-web frame read back: its flag byte and payload.
struct Frame<'a> {
    flag: u8,
    payload: &'a [u8],
}

/// Splits the first frame off `bytes`, returning it and the rest.
fn split_frame(bytes: &[u8]) -> anyhow::Result<(Frame<'_>, &[u8])> {
    let header = bytes.get(..5).context("frame header")?;
    let len = usize::try_from(u32::from_be_bytes([
        header[1], header[2], header[3], header[4],
    ]))?;
    let payload = bytes.get(5..5 + len).context("frame payload")?;
    let frame = Frame {
        flag: header[0],
        payload,
    };
    Ok((frame, &bytes[5 + len..]))
}

#[tokio::test]
async fn a_call_increments_its_counter_on_the_metrics_endpoint() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let channel = channel(system.endpoints.payment).await?;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(10)).await?;
    let metrics_url = format!("http://{}/metrics", system.endpoints.metrics);
    let series = r#"grpc_server_handled_total{grpc_code="NotFound",grpc_method="Check",grpc_service="grpc.health.v1.Health"}"#;

    // Other tests in this binary share the registry, so compare before and after one call
    // whose outcome (NOT_FOUND for an unknown service name) no other test produces.
    let (status, before) = http_get(&metrics_url).await?;
    assert_eq!(status, http::StatusCode::OK);
    let before = sample(&before, series).unwrap_or(0.0);
    let unknown = health_status(&channel, "shop.nothing.v1.Here").await;
    let code = unknown
        .expect_err("unknown service")
        .downcast::<tonic::Status>()?
        .code();
    assert_eq!(code, tonic::Code::NotFound);
    let (_, after) = http_get(&metrics_url).await?;
    assert_eq!(sample(&after, series), Some(before + 1.0), "{after}");
    assert!(
        after.contains("grpc_server_handling_seconds_bucket"),
        "{after}"
    );
    Ok(())
}

#[tokio::test]
async fn the_caller_request_id_comes_back_and_a_new_one_is_made_otherwise() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let channel = channel(system.endpoints.user).await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "req-123".parse()?);
    let response = client.check(request).await?;
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-123")
    );
    let response = client.check(HealthCheckRequest::default()).await?;
    let made = response
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .context("a request id is made when none is sent")?;
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
    Ok(())
}

#[tokio::test]
async fn the_gateway_answers_unknown_routes_with_a_json_404() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let (status, body) =
        http_get(&format!("http://{}/v1/nothing", system.endpoints.gateway)).await?;
    assert_eq!(status, http::StatusCode::NOT_FOUND);
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["code"], 5);
    assert_eq!(body["message"], "no route for GET /v1/nothing");
    Ok(())
}

/// Bytes that are no protobuf message are the caller's mistake: INVALID_ARGUMENT (counted as
/// such), not INTERNAL, which the failure alert would count as a server fault.
#[tokio::test]
async fn an_undecodable_request_is_invalid_argument_not_internal() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let code = grpc_web_get_product(system.endpoints.product, &[0xff, 0xff, 0xff, 0xff]).await?;
    assert!(
        code == "3" || code.contains("grpc-status:3"),
        "expected INVALID_ARGUMENT (3), got {code:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_request_without_a_message_is_invalid_argument_not_internal() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let code = grpc_web_get_product(system.endpoints.product, &[]).await?;
    assert!(
        code == "3" || code.contains("grpc-status:3"),
        "expected INVALID_ARGUMENT (3), got {code:?}"
    );
    Ok(())
}

/// The grpc-status of GetProduct sent over grpc-web with `payload` as its one frame (none when
/// empty).
async fn grpc_web_get_product(
    addr: std::net::SocketAddr,
    payload: &[u8],
) -> anyhow::Result<String> {
    wait_for_health(
        &channel(addr).await?,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await?;
    let body = if payload.is_empty() {
        Vec::new()
    } else {
        grpc_web_frame(payload)
    };
    let request = http::Request::post(format!(
        "http://{addr}/shop.product.v1.ProductService/GetProduct"
    ))
    .version(http::Version::HTTP_11)
    .header("content-type", "application/grpc-web+proto")
    .header("x-grpc-web", "1")
    .body(Full::new(bytes::Bytes::from(body)))?;
    let (status, headers, body) = http1(request).await?;
    assert_eq!(status, http::StatusCode::OK);
    // A trailers-only answer: the status is in the headers (or a lone trailer frame).
    let in_headers = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(match in_headers {
        Some(code) => code,
        None => {
            let (trailers, _) = split_frame(&body)?;
            String::from_utf8_lossy(trailers.payload).to_string()
        }
    })
}

/// How a caller goes away after sending a call's headers and before its message.
#[derive(Clone, Copy, Debug)]
enum GoesAway {
    /// RST_STREAM CANCEL: a gateway cancelling the upstream call of a client that left.
    Cancels,
    /// The connection closes: a load tool or a crashed client.
    Disconnects,
}

/// tonic reads a reset before the request's message as a request without a message (INTERNAL)
/// and a broken connection as UNKNOWN: server faults in the metrics and alerts, for calls whose
/// caller left. Both are counted as CANCELLED.
#[tokio::test]
async fn a_call_cancelled_before_its_message_counts_as_cancelled_not_internal() -> anyhow::Result<()>
{
    counted_as_cancelled(GoesAway::Cancels, "Internal").await
}

#[tokio::test]
async fn a_call_whose_connection_breaks_before_its_message_counts_as_cancelled_not_unknown()
-> anyhow::Result<()> {
    counted_as_cancelled(GoesAway::Disconnects, "Unknown").await
}

async fn counted_as_cancelled(how: GoesAway, instead_of: &str) -> anyhow::Result<()> {
    let system = spawn_system().await?;
    // Each case on a port of its own: the counters are shared by the tests of this binary.
    let addr = match how {
        GoesAway::Cancels => system.endpoints.payment,
        GoesAway::Disconnects => system.endpoints.order,
    };
    wait_for_health(
        &channel(addr).await?,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await?;
    let metrics_url = format!("http://{}/metrics", system.endpoints.metrics);
    let series = |code: &str| {
        format!(
            r#"grpc_server_handled_total{{grpc_code="{code}",grpc_method="Check",grpc_service="grpc.health.v1.Health"}}"#
        )
    };
    let count = |text: &str, code: &str| sample(text, &series(code)).unwrap_or(0.0);
    let (_, before) = http_get(&metrics_url).await?;

    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    // Headers only: the message never follows.
    let (response, mut stream) = client.send_request(request, false)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    match how {
        GoesAway::Cancels => stream.send_reset(h2::Reason::CANCEL),
        GoesAway::Disconnects => {
            connection.abort();
            drop((response, stream, client));
        }
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let (_, after) = http_get(&metrics_url).await?;
        let settled = ["Canceled", instead_of]
            .iter()
            .any(|code| count(&after, code) > count(&before, code));
        if settled {
            break after;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the call ({how:?}) was never counted:\n{after}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        count(&after, instead_of),
        count(&before, instead_of),
        "the call ({how:?}) was counted as {instead_of}"
    );
    // At least: the counters are the process's, and another test of this binary may cancel a
    // health check of its own order- or payment-service meanwhile (CI saw 2 once).
    assert!(
        count(&after, "Canceled") >= count(&before, "Canceled") + 1.0,
        "the call ({how:?}) was not counted as Canceled"
    );
    Ok(())
}
