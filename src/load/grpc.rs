//! The gRPC driver: straight to user-, product- and order-service with the generated clients,
//! over a few HTTP/2 connections per service shared by every virtual user.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use shop_proto::{
    order::v1::{
        Address, GetOrderRequest, OrderStatus, PlaceOrderItem, PlaceOrderRequest,
        order_service_client::OrderServiceClient,
    },
    product::v1::{
        GetProductRequest, ListProductsRequest, Product as ProductMessage, UpdateProductRequest,
        product_service_client::ProductServiceClient,
    },
    user::v1::{
        LoginRequest, RefreshTokenRequest, RegisterRequest, TokenPair,
        user_service_client::UserServiceClient,
    },
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

use super::driver::{Call, Driver, Failure, OrderState, Product, Reply, brief, seconds};

/// HTTP/2 connections per service. One would do for the protocol, but a server caps the
/// streams of one connection and a connection's work lands on one server task; a few spread it.
const CONNECTIONS_PER_SERVICE: usize = 4;
const CATALOGUE_PAGE: i32 = 100;
const RESULTS_PAGE: i32 = 12;

/// Where each service listens, `host:port`.
#[derive(Debug, Clone)]
pub(crate) struct Addresses {
    pub(crate) user: String,
    pub(crate) product: String,
    pub(crate) order: String,
}

pub(crate) struct GrpcDriver {
    user: Vec<Channel>,
    product: Vec<Channel>,
    order: Vec<Channel>,
    next: AtomicUsize,
}

impl GrpcDriver {
    /// Connects every channel now, so an unreachable service fails the set-up, naming it.
    pub(crate) async fn connect(
        addresses: &Addresses,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            user: channels("user-service", &addresses.user, connect_timeout).await?,
            product: channels("product-service", &addresses.product, connect_timeout).await?,
            order: channels("order-service", &addresses.order, connect_timeout).await?,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self, channels: &[Channel]) -> Channel {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % channels.len();
        channels[index].clone()
    }
}

async fn channels(
    service: &str,
    address: &str,
    connect_timeout: Duration,
) -> Result<Vec<Channel>, String> {
    let endpoint = Channel::from_shared(format!("http://{address}"))
        .map_err(|e| format!("{service} address {address:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(CONNECTIONS_PER_SERVICE);
    for _ in 0..CONNECTIONS_PER_SERVICE {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {service} at {address}: {e}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

fn authorised<T>(message: T, token: &str) -> Result<Request<T>, Failure> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Failure::BadReply("the access token is not a metadata value".into()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn failure(status: tonic::Status) -> Failure {
    let retry_after = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(seconds);
    Failure::Grpc {
        code: status.code(),
        message: brief(status.message()),
        retry_after,
    }
}

fn tokens(pair: Option<TokenPair>) -> Result<Reply, Failure> {
    let pair = pair.ok_or_else(|| Failure::BadReply("the answer has no tokens".into()))?;
    Ok(Reply::Tokens {
        access: pair.access_token,
        refresh: pair.refresh_token,
        expires_in_secs: u64::try_from(pair.expires_in).unwrap_or_default(),
    })
}

fn order(order: Option<shop_proto::order::v1::Order>) -> Result<Reply, Failure> {
    let order = order.ok_or_else(|| Failure::BadReply("the answer has no order".into()))?;
    let state = match order.status() {
        OrderStatus::Confirmed | OrderStatus::Shipped => OrderState::Confirmed,
        OrderStatus::Cancelled => OrderState::Cancelled,
        OrderStatus::Unspecified | OrderStatus::PendingPayment | OrderStatus::Paid => {
            OrderState::Pending
        }
    };
    Ok(Reply::Order {
        order_id: order.order_id,
        state,
    })
}

impl Driver for GrpcDriver {
    async fn call(&self, call: Call<'_>) -> Result<Reply, Failure> {
        match call {
            Call::Catalogue { page_token } => {
                let listed = ProductServiceClient::new(self.pick(&self.product))
                    .list_products(ListProductsRequest {
                        page_size: CATALOGUE_PAGE,
                        page_token: page_token.to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map_err(failure)?
                    .into_inner();
                Ok(Reply::Products {
                    products: listed
                        .products
                        .into_iter()
                        .map(|p| Product {
                            id: p.product_id,
                            name: p.name,
                            category: p.category,
                            version: p.version,
                        })
                        .collect(),
                    next_page_token: listed.next_page_token,
                })
            }
            Call::Browse { category } => {
                ProductServiceClient::new(self.pick(&self.product))
                    .list_products(ListProductsRequest {
                        page_size: RESULTS_PAGE,
                        category: category.to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map_err(failure)?;
                Ok(Reply::Done)
            }
            Call::Search { query } => {
                ProductServiceClient::new(self.pick(&self.product))
                    .list_products(ListProductsRequest {
                        page_size: RESULTS_PAGE,
                        query: query.to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map_err(failure)?;
                Ok(Reply::Done)
            }
            Call::View { product_id } => {
                ProductServiceClient::new(self.pick(&self.product))
                    .get_product(GetProductRequest {
                        product_id: product_id.to_owned(),
                    })
                    .await
                    .map_err(failure)?;
                Ok(Reply::Done)
            }
            Call::PlaceOrder {
                token,
                product_id,
                card,
                idempotency_key,
            } => {
                let request = PlaceOrderRequest {
                    items: vec![PlaceOrderItem {
                        product_id: product_id.to_owned(),
                        quantity: 1,
                    }],
                    shipping_address: Some(Address {
                        recipient: "Load Generator".to_owned(),
                        line1: "1 Benchmark Street".to_owned(),
                        line2: String::new(),
                        city: "London".to_owned(),
                        postal_code: "N1 7AA".to_owned(),
                        country: "GB".to_owned(),
                    }),
                    payment_method_token: card.to_owned(),
                    idempotency_key: idempotency_key.to_owned(),
                };
                let placed = OrderServiceClient::new(self.pick(&self.order))
                    .place_order(authorised(request, token)?)
                    .await
                    .map_err(failure)?;
                order(placed.into_inner().order)
            }
            Call::GetOrder { token, order_id } => {
                let request = GetOrderRequest {
                    order_id: order_id.to_owned(),
                };
                let got = OrderServiceClient::new(self.pick(&self.order))
                    .get_order(authorised(request, token)?)
                    .await
                    .map_err(failure)?;
                order(got.into_inner().order)
            }
            Call::Register {
                email,
                password,
                display_name,
            } => {
                UserServiceClient::new(self.pick(&self.user))
                    .register(RegisterRequest {
                        email: email.to_owned(),
                        password: password.to_owned(),
                        display_name: display_name.to_owned(),
                    })
                    .await
                    .map_err(failure)?;
                Ok(Reply::Done)
            }
            Call::Login { email, password } => {
                let answer = UserServiceClient::new(self.pick(&self.user))
                    .login(LoginRequest {
                        email: email.to_owned(),
                        password: password.to_owned(),
                    })
                    .await
                    .map_err(failure)?;
                tokens(answer.into_inner().tokens)
            }
            Call::Refresh { refresh_token } => {
                let answer = UserServiceClient::new(self.pick(&self.user))
                    .refresh_token(RefreshTokenRequest {
                        refresh_token: refresh_token.to_owned(),
                    })
                    .await
                    .map_err(failure)?;
                tokens(answer.into_inner().tokens)
            }
            Call::SetStock {
                token,
                product_id,
                version,
                stock,
            } => {
                let request = UpdateProductRequest {
                    product: Some(ProductMessage {
                        product_id: product_id.to_owned(),
                        version,
                        stock,
                        ..Default::default()
                    }),
                    // Without a mask the service takes only the non-empty descriptive fields,
                    // never the stock.
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["stock".to_owned()],
                    }),
                };
                ProductServiceClient::new(self.pick(&self.product))
                    .update_product(authorised(request, token)?)
                    .await
                    .map_err(failure)?;
                Ok(Reply::Done)
            }
            Call::Url => Err(Failure::BadReply(
                "--scenario url needs --target rest".into(),
            )),
        }
    }
}
