//! One order, one trace: the real `shop up` binary exports its spans over OTLP/gRPC to a receiver
//! in this test (the `opentelemetry-proto` service definitions), writes ECS JSON logs to stdout
//! and metrics to `/metrics`; one order placed through the gateway is checked in all three.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use http::{Method, StatusCode};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value as Attribute},
    trace::v1::span::SpanKind,
};
use serde_json::{Value, json};
use tokio::process::Child;
use tonic::{Request, Response, Status};

use crate::{
    gateway::{call, login},
    helpers::http_get,
    process::{Output, endpoints_and_output, shop},
};

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_id: String,
    attributes: HashMap<String, String>,
}

#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Attribute::StringValue(s)) => s.clone(),
        Some(Attribute::IntValue(i)) => i.to_string(),
        Some(Attribute::BoolValue(b)) => b.to_string(),
        Some(Attribute::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(Received {
                        service: service.clone(),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start() -> anyhow::Result<(Self, SocketAddr)> {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok((receiver, addr))
    }

    fn spans(&self) -> Vec<Received> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `shop up` with its data in `data`, exporting to `otlp`, logging at `log_filter`.
async fn shop_up(
    data: &std::path::Path,
    otlp: SocketAddr,
    log_filter: &str,
) -> anyhow::Result<(Child, HashMap<String, String>, Output)> {
    let mut child = shop()
        .env("SHOP_DATA_DIR", data)
        .env("RUST_LOG", log_filter)
        .env("LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .spawn()?;
    let (endpoints, output) = endpoints_and_output(&mut child).await?;
    Ok((child, endpoints, output))
}

fn gateway(endpoints: &HashMap<String, String>) -> anyhow::Result<SocketAddr> {
    let address = endpoints.get("gateway").context("gateway in the table")?;
    Ok(address.trim_start_matches("http://").parse()?)
}

/// Places one order through the gateway and waits until it is confirmed; returns its id and the
/// customer's token.
async fn checkout(gw: SocketAddr, email: &str) -> anyhow::Result<(String, String)> {
    let token = login(gw, email).await?;
    let (status, _, page) = call(gw, Method::GET, "/v1/products?pageSize=1", None, "").await?;
    ensure!(status == StatusCode::OK, "browse: {status} {page}");
    let product = page["products"][0]["productId"]
        .as_str()
        .context("a product")?
        .to_owned();
    let order = json!({
        "items": [{"productId": product, "quantity": 1}],
        "paymentMethodToken": "tok_visa",
        "idempotencyKey": uuid::Uuid::new_v4().to_string(),
        "shippingAddress": {"recipient": "Ada", "line1": "1 Trace Way", "city": "Leeds",
                            "postalCode": "LS1", "country": "GB"},
    });
    let (status, _, placed) = call(
        gw,
        Method::POST,
        "/v1/orders",
        Some(&token),
        order.to_string(),
    )
    .await?;
    ensure!(status == StatusCode::OK, "place: {status} {placed}");
    let order_id = placed["order"]["orderId"]
        .as_str()
        .context("order id")?
        .to_owned();
    for _ in 0..200 {
        let path = format!("/v1/orders/{order_id}");
        let (_, _, body) = call(gw, Method::GET, &path, Some(&token), "").await?;
        if body["order"]["status"] == "ORDER_STATUS_CONFIRMED" {
            return Ok((order_id, token));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("order {order_id} was not confirmed")
}

/// Stops the child with SIGTERM (its exporter flushes on the way out) and waits for it.
async fn stop(mut child: Child, output: &Output) -> anyhow::Result<()> {
    let pid = child.id().context("child is running")?;
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    let status = match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            let lines = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let tail: Vec<_> = lines.iter().rev().take(15).collect();
            bail!("shop did not stop within 30 s after SIGTERM; its last lines: {tail:#?}");
        }
    };
    ensure!(status.success(), "shop exited with {status}");
    Ok(())
}

/// The spans of the trace `trace_id`, checked to be one tree rooted at `root`.
fn one_tree(spans: &[Received], root: &Received) -> anyhow::Result<Vec<Received>> {
    let trace: Vec<Received> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    let orphans: Vec<String> = trace
        .iter()
        .filter(|s| s.span_id != root.span_id && !ids.contains(s.parent_id.as_str()))
        .map(|s| format!("{}: {} (parent {})", s.service, s.name, s.parent_id))
        .collect();
    let all: Vec<String> = trace
        .iter()
        .map(|s| format!("{} {} {} <- {}", s.service, s.name, s.span_id, s.parent_id))
        .collect();
    ensure!(
        orphans.is_empty(),
        "spans outside the tree: {orphans:#?} in {all:#?}"
    );
    Ok(trace)
}

fn has(trace: &[Received], service: &str, kind: SpanKind, name: &str) -> bool {
    trace
        .iter()
        .any(|s| s.service == service && s.kind == kind && s.name == name)
}

/// What one order must show in its trace, whatever the log level.
fn check_order_trace(spans: &[Received]) -> anyhow::Result<()> {
    let root = spans
        .iter()
        .find(|s| s.service == "gateway" && s.name == "POST /v1/orders")
        .context("the gateway's span of POST /v1/orders")?;
    ensure!(root.kind == SpanKind::Server && root.parent_id.is_empty());
    let trace = one_tree(spans, root)?;
    let expected = [
        (
            "gateway",
            SpanKind::Client,
            "shop.order.v1.OrderService/PlaceOrder",
        ),
        (
            "order-service",
            SpanKind::Server,
            "shop.order.v1.OrderService/PlaceOrder",
        ),
        (
            "order-service",
            SpanKind::Client,
            "shop.product.v1.ProductService/ReserveStock",
        ),
        (
            "product-service",
            SpanKind::Server,
            "shop.product.v1.ProductService/ReserveStock",
        ),
        ("order-service", SpanKind::Producer, "publish order.created"),
        (
            "payment-service",
            SpanKind::Consumer,
            "process order.created",
        ),
        ("payment-service", SpanKind::Client, "charge"),
        (
            "payment-service",
            SpanKind::Producer,
            "publish payment.succeeded",
        ),
        (
            "order-service",
            SpanKind::Consumer,
            "process payment.succeeded",
        ),
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|(service, kind, name)| !has(&trace, service, *kind, name))
        .collect();
    let seen: Vec<String> = trace
        .iter()
        .map(|s| format!("{} {:?} {}", s.service, s.kind, s.name))
        .collect();
    ensure!(missing.is_empty(), "missing {missing:?} in {seen:#?}");
    let reserve = trace
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.name.ends_with("/ReserveStock"))
        .context("ReserveStock")?;
    ensure!(reserve.attributes.get("rpc.system").map(String::as_str) == Some("grpc"));
    ensure!(
        reserve
            .attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str)
            == Some("0")
    );
    let consume = trace
        .iter()
        .find(|s| s.kind == SpanKind::Consumer)
        .context("a consumer span")?;
    ensure!(
        consume
            .attributes
            .get("messaging.system")
            .map(String::as_str)
            == Some("shop.in_process")
    );
    Ok(())
}

fn log_lines(output: &Output) -> Vec<Value> {
    output
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn errors(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["log.level"] == "ERROR").collect()
}

/// Whether `/metrics` has a series of `name` with every label of `labels`.
fn has_series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    metrics.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            && labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_is_one_trace_with_ecs_logs_and_saga_metrics() -> anyhow::Result<()> {
    let (receiver, otlp) = Receiver::start().await?;
    let data = tempfile::tempdir()?;
    let (child, endpoints, output) = shop_up(data.path(), otlp, "info").await?;
    let gw = gateway(&endpoints)?;
    let (order_id, token) = checkout(gw, "traced@example.com").await?;

    // An Envoy sidecar may send only B3: the gateway's span joins that trace.
    let b3_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let b3_parent = "00f067aa0ba902b7";
    let request = http::Request::get(format!("http://{gw}/v1/products?pageSize=1"))
        .header("b3", format!("{b3_trace}-{b3_parent}-1"))
        .body(http_body_util::Full::default())?;
    let (status, _, _) = crate::helpers::http1(request).await?;
    ensure!(status == StatusCode::OK);

    // Callers' mistakes are not errors.
    let wrong = json!({"email": "traced@example.com", "password": "not the password at all"});
    let (status, _, _) = call(gw, Method::POST, "/v1/auth/login", None, wrong.to_string()).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}");
    let missing = format!("/v1/products/{}", uuid::Uuid::new_v4());
    let (status, _, _) = call(gw, Method::GET, &missing, None, "").await?;
    ensure!(status == StatusCode::NOT_FOUND, "{status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = log_lines(&output);
    let unexpected = errors(&before);
    assert!(
        unexpected.is_empty(),
        "no ERROR for callers' mistakes: {unexpected:#?}"
    );

    // An order the store cannot read is the operator's problem: INTERNAL, logged at ERROR.
    let db = data.path().join("order.db");
    let corrupt = tokio::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE orders SET status='lost' WHERE order_id=?\", (sys.argv[2],)); c.commit()"])
        .arg(&db)
        .arg(&order_id)
        .status()
        .await?;
    ensure!(corrupt.success(), "could not corrupt the order row");
    let path = format!("/v1/orders/{order_id}");
    let (status, _, body) = call(gw, Method::GET, &path, Some(&token), "").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["message"], "internal error", "no detail leaks: {body}");

    let metrics_url = endpoints.get("metrics").context("metrics")?;
    let (_, metrics) = http_get(metrics_url).await?;
    stop(child, &output).await?;

    // Logs: ECS JSON, with the trace of the span they were written in.
    let lines = log_lines(&output);
    let errors = errors(&lines);
    assert!(
        errors
            .iter()
            .any(|e| e["message"] == "internal error" && e["trace.id"].is_string()),
        "the internal error is logged at ERROR with its trace: {errors:#?}"
    );
    let placed = lines
        .iter()
        .find(|l| l["message"] == "order placed")
        .context("the 'order placed' log line")?;
    for field in [
        "@timestamp",
        "log.level",
        "message",
        "service.name",
        "event.dataset",
        "trace.id",
        "span.id",
    ] {
        assert!(placed[field].is_string(), "{field} in {placed}");
    }
    assert_eq!(placed["service.name"], "order-service");
    assert_eq!(placed["order_id"], order_id.as_str(), "{placed}");
    assert!(placed["request_id"].is_string(), "{placed}");

    // Traces: one tree per order, each service under its own name.
    let spans = receiver.spans();
    check_order_trace(&spans)?;
    let logged_in = spans
        .iter()
        .find(|s| placed["span.id"] == s.span_id.as_str())
        .context("the span the 'order placed' line names")?;
    assert_eq!(placed["trace.id"], logged_in.trace_id.as_str());
    let joined = spans
        .iter()
        .find(|s| s.service == "gateway" && s.kind == SpanKind::Server && s.trace_id == b3_trace)
        .context("the B3 request's gateway span in the caller's trace")?;
    assert_eq!(joined.parent_id, b3_parent);

    // Metrics of the saga and the runtime, after one order.
    for (name, labels) in [
        ("orders_placed_total", vec![]),
        ("orders_finalized_total", vec![("status", "confirmed")]),
        (
            "checkout_duration_seconds_count",
            vec![("status", "confirmed")],
        ),
        ("orders_pending_payment", vec![]),
        (
            "payment_charge_attempts_total",
            vec![("outcome", "approved")],
        ),
        ("payments_settled_total", vec![("status", "succeeded")]),
        ("stock_reservations_total", vec![("outcome", "reserved")]),
        (
            "db_pool_connections",
            vec![("service", "order-service"), ("state", "idle")],
        ),
        (
            "db_transaction_acquire_seconds_count",
            vec![("service", "order-service")],
        ),
        ("events_queue_depth", vec![("consumer", "payment-service")]),
        ("tokio_alive_tasks", vec![]),
        ("process_resident_memory_bytes", vec![]),
    ] {
        assert!(
            has_series(&metrics, name, &labels),
            "{name} {labels:?} missing"
        );
    }
    Ok(())
}

/// Quieter logs must not cost traces: with `RUST_LOG=warn` the order's spans still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_are_exported_whatever_the_log_level() -> anyhow::Result<()> {
    let (receiver, otlp) = Receiver::start().await?;
    let data = tempfile::tempdir()?;
    let (child, endpoints, output) = shop_up(data.path(), otlp, "warn").await?;
    checkout(gateway(&endpoints)?, "quiet@example.com").await?;
    stop(child, &output).await?;
    check_order_trace(&receiver.spans())
}
