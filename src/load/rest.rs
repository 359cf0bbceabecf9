//! The REST driver: the routes of `kong/kong.yaml` through the gateway, proto3 JSON bodies, one
//! pooled HTTP/1.1 client shared by every virtual user.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

use super::driver::{Call, Driver, Failure, OrderState, Product, Reply, brief, seconds};

/// Larger answers are refused rather than buffered: nothing the shop sends comes close.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The shop's catalogue pages and a shopper's result page.
const CATALOGUE_PAGE: &str = "100";
const RESULTS_PAGE: &str = "12";

pub(crate) struct RestDriver {
    client: Client<HttpConnector, Full<Bytes>>,
    /// The gateway's base URL without a trailing slash; routes are appended to it.
    base: String,
    /// `--url` as given, for `--scenario url`.
    url: Uri,
    /// `--header`s, sent with every request.
    headers: HeaderMap,
}

impl RestDriver {
    pub(crate) fn new(url: Uri, headers: HeaderMap, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let base = url.to_string().trim_end_matches('/').to_owned();
        Self {
            client,
            base,
            url,
            headers,
        }
    }

    /// One exchange; a non-2xx answer is a [`Failure::Http`] carrying the error body's message.
    async fn send(
        &self,
        method: Method,
        route: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Bytes, Failure> {
        let uri = if route.is_empty() {
            self.url.clone()
        } else {
            format!("{}{route}", self.base)
                .parse::<Uri>()
                .map_err(|e| Failure::BadReply(format!("cannot build a URI for {route}: {e}")))?
        };
        let mut request = http::Request::builder().method(method).uri(uri);
        if let Some(headers) = request.headers_mut() {
            headers.extend(self.headers.clone());
            if body.is_some() {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            if let Some(token) = token {
                let value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    Failure::BadReply("the access token is not a header value".into())
                })?;
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = request
            .body(Full::new(body))
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|error| {
            let message = chain(&error);
            if error.is_connect() {
                Failure::Connect(message)
            } else {
                Failure::Transport(message)
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(seconds);
        let bytes = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::Transport(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(http_failure(status, &bytes, retry_after))
        }
    }
}

impl Driver for RestDriver {
    async fn call(&self, call: Call<'_>) -> Result<Reply, Failure> {
        match call {
            Call::Catalogue { page_token } => {
                let route = format!("/v1/products?{}", catalogue_query(page_token));
                let body = self.send(Method::GET, &route, None, None).await?;
                products(&json_of(&body)?)
            }
            Call::Browse { category } => {
                let route = format!("/v1/products?{}", page_query("category", category));
                self.send(Method::GET, &route, None, None).await?;
                Ok(Reply::Done)
            }
            Call::Search { query } => {
                let route = format!("/v1/products?{}", page_query("query", query));
                self.send(Method::GET, &route, None, None).await?;
                Ok(Reply::Done)
            }
            Call::View { product_id } => {
                let route = format!("/v1/products/{product_id}");
                self.send(Method::GET, &route, None, None).await?;
                Ok(Reply::Done)
            }
            Call::PlaceOrder {
                token,
                product_id,
                card,
                idempotency_key,
            } => {
                let body = json!({
                    "items": [{"productId": product_id, "quantity": 1}],
                    "paymentMethodToken": card,
                    "idempotencyKey": idempotency_key,
                    "shippingAddress": shipping_address(),
                });
                let answer = self
                    .send(Method::POST, "/v1/orders", Some(token), Some(body))
                    .await?;
                order(&json_of(&answer)?)
            }
            Call::GetOrder { token, order_id } => {
                let route = format!("/v1/orders/{order_id}");
                let answer = self.send(Method::GET, &route, Some(token), None).await?;
                order(&json_of(&answer)?)
            }
            Call::Register {
                email,
                password,
                display_name,
            } => {
                let body =
                    json!({"email": email, "password": password, "displayName": display_name});
                self.send(Method::POST, "/v1/users:register", None, Some(body))
                    .await?;
                Ok(Reply::Done)
            }
            Call::Login { email, password } => {
                let body = json!({"email": email, "password": password});
                let answer = self
                    .send(Method::POST, "/v1/auth/login", None, Some(body))
                    .await?;
                tokens(&json_of(&answer)?)
            }
            Call::Refresh { refresh_token } => {
                let body = json!({"refreshToken": refresh_token});
                let answer = self
                    .send(Method::POST, "/v1/auth/refresh", None, Some(body))
                    .await?;
                tokens(&json_of(&answer)?)
            }
            Call::SetStock {
                token,
                product_id,
                version,
                stock,
            } => {
                let route = format!("/v1/products/{product_id}?updateMask=stock");
                let body = json!({"version": version.to_string(), "stock": stock});
                self.send(Method::PATCH, &route, Some(token), Some(body))
                    .await?;
                Ok(Reply::Done)
            }
            Call::Url => {
                self.send(Method::GET, "", None, None).await?;
                Ok(Reply::Done)
            }
        }
    }
}

// The serializer is not Send, so queries are built outside the async calls.
fn catalogue_query(page_token: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("pageSize", CATALOGUE_PAGE);
    if !page_token.is_empty() {
        query.append_pair("pageToken", page_token);
    }
    query.finish()
}

fn page_query(key: &str, value: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair(key, value)
        .append_pair("pageSize", RESULTS_PAGE)
        .finish()
}

fn shipping_address() -> Value {
    json!({
        "recipient": "Load Generator",
        "line1": "1 Benchmark Street",
        "city": "London",
        "postalCode": "N1 7AA",
        "country": "GB",
    })
}

/// The gateway answers errors as `{code, message, details}`; anything else is kept as text.
fn http_failure(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Failure {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Failure::Http {
        status: status.as_u16(),
        message: brief(&message),
        retry_after,
    }
}

/// An error and its causes on one line (hyper's own message alone says only "client error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn json_of(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::BadReply(format!("not JSON: {e}")))
}

fn text<'a>(value: &'a Value, pointer: &str) -> Result<&'a str, Failure> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::BadReply(format!("the answer has no {pointer}")))
}

/// proto3 JSON writes int64 as a string (and omits zero); numbers are accepted too.
fn int64(value: Option<&Value>) -> Option<i64> {
    match value {
        None => Some(0),
        Some(Value::String(s)) => s.parse().ok(),
        Some(other) => other.as_i64(),
    }
}

fn products(value: &Value) -> Result<Reply, Failure> {
    let listed = value
        .get("products")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let products = listed
        .iter()
        .map(|p| {
            Ok(Product {
                id: text(p, "/productId")?.to_owned(),
                name: p
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                category: p
                    .get("category")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                version: int64(p.get("version"))
                    .ok_or_else(|| Failure::BadReply("a product's version is no number".into()))?,
            })
        })
        .collect::<Result<_, Failure>>()?;
    let next_page_token = value
        .get("nextPageToken")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Reply::Products {
        products,
        next_page_token,
    })
}

fn order(value: &Value) -> Result<Reply, Failure> {
    let state = match value.pointer("/order/status").and_then(Value::as_str) {
        Some("ORDER_STATUS_CONFIRMED" | "ORDER_STATUS_SHIPPED") => OrderState::Confirmed,
        Some("ORDER_STATUS_CANCELLED") => OrderState::Cancelled,
        _ => OrderState::Pending,
    };
    Ok(Reply::Order {
        order_id: text(value, "/order/orderId")?.to_owned(),
        state,
    })
}

fn tokens(value: &Value) -> Result<Reply, Failure> {
    let expires_in_secs = int64(value.pointer("/tokens/expiresIn"))
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| Failure::BadReply("tokens.expiresIn is no number".into()))?;
    Ok(Reply::Tokens {
        access: text(value, "/tokens/accessToken")?.to_owned(),
        refresh: text(value, "/tokens/refreshToken")?.to_owned(),
        expires_in_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto3_json_answers_decode_with_int64_as_strings_and_zero_values_omitted() {
        let listed = json!({"products": [
            {"productId": "p1", "name": "Mug", "category": "kitchen", "version": "3"},
            {"productId": "p2", "name": "Book"}
        ], "nextPageToken": "next"});
        let Ok(Reply::Products {
            products,
            next_page_token,
        }) = products(&listed)
        else {
            panic!("products did not decode");
        };
        assert_eq!(next_page_token, "next");
        assert_eq!(products[0].version, 3);
        assert_eq!(products[1].version, 0);
        assert_eq!(products[1].category, "");

        let placed = json!({"order": {"orderId": "o1", "status": "ORDER_STATUS_SHIPPED"}});
        assert!(matches!(
            order(&placed),
            Ok(Reply::Order {
                state: OrderState::Confirmed,
                ..
            })
        ));
        let pending = json!({"order": {"orderId": "o1", "status": "ORDER_STATUS_PAID"}});
        assert!(matches!(
            order(&pending),
            Ok(Reply::Order {
                state: OrderState::Pending,
                ..
            })
        ));
        let signed_in =
            json!({"tokens": {"accessToken": "a", "refreshToken": "r", "expiresIn": "900"}});
        assert!(matches!(
            tokens(&signed_in),
            Ok(Reply::Tokens {
                expires_in_secs: 900,
                ..
            })
        ));
        assert!(matches!(order(&json!({})), Err(Failure::BadReply(_))));
    }

    #[test]
    fn an_error_answer_keeps_the_gateways_message() {
        let failure = http_failure(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"code":8,"message":"API rate limit exceeded","details":[]}"#,
            seconds("2"),
        );
        assert_eq!(failure.kind(), "HTTP 429");
        assert_eq!(failure.message(), "API rate limit exceeded");
        assert!(failure.is_retryable());
        assert_eq!(failure.retry_after(), Some(Duration::from_secs(2)));
    }
}
