//! The reference point of `scripts/bench.sh`: product-service's GetProduct on plain tonic, with
//! none of the server kit (auth, metrics, tracing, health, limits) and no store behind it.
//!
//! `cargo run --release --example bare_tonic -- 127.0.0.1:50099` serves until killed. The reply
//! is one fixed, realistically sized product, so the gap to the real service is what the kit and
//! the read path cost, not the encoding of a smaller message. The other methods answer
//! UNIMPLEMENTED.

use std::{collections::HashMap, net::SocketAddr};

use anyhow::Context as _;
use shop_proto::{
    common::v1::Money,
    product::v1::{
        CreateProductRequest, CreateProductResponse, DeleteProductRequest, DeleteProductResponse,
        GetProductRequest, GetProductResponse, ListProductsRequest, ListProductsResponse, Product,
        ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest, ReserveStockResponse,
        UpdateProductRequest, UpdateProductResponse,
        product_service_server::{ProductService, ProductServiceServer},
    },
};
use tonic::{Request, Response, Status};

struct Bare {
    reply: GetProductResponse,
}

#[tonic::async_trait]
impl ProductService for Bare {
    async fn get_product(
        &self,
        _request: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        Ok(Response::new(self.reply.clone()))
    }

    async fn create_product(
        &self,
        _request: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        Err(Status::unimplemented("bare_tonic serves GetProduct only"))
    }

    async fn list_products(
        &self,
        _request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        Err(Status::unimplemented("bare_tonic serves GetProduct only"))
    }

    async fn update_product(
        &self,
        _request: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        Err(Status::unimplemented("bare_tonic serves GetProduct only"))
    }

    async fn delete_product(
        &self,
        _request: Request<DeleteProductRequest>,
    ) -> Result<Response<DeleteProductResponse>, Status> {
        Err(Status::unimplemented("bare_tonic serves GetProduct only"))
    }

    async fn reserve_stock(
        &self,
        _request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        Err(Status::unimplemented("bare_tonic serves GetProduct only"))
    }

    async fn release_stock(
        &self,
        _request: Request<ReleaseStockRequest>,
    ) -> Result<Response<ReleaseStockResponse>, Status> {
        Err(Status::unimplemented("bare_tonic serves GetProduct only"))
    }
}

/// A product shaped like the demo catalogue's.
fn sample() -> Product {
    let time = prost_types::Timestamp {
        seconds: 1_764_000_000,
        nanos: 0,
    };
    Product {
        product_id: "0b6f5c1e-8d2a-4f7e-9c3b-2a1d4e5f6a7b".to_owned(),
        sku: "BOOK-0001".to_owned(),
        name: "The Rust Programming Language".to_owned(),
        description: "The official book on Rust, for programmers who want to learn it well."
            .to_owned(),
        category: "books".to_owned(),
        price: Some(Money {
            amount_minor: 3999,
            currency: "EUR".to_owned(),
        }),
        image_url: "https://images.shop.local/book-0001.jpg".to_owned(),
        attributes: HashMap::from([("format".to_owned(), "paperback".to_owned())]),
        stock: 100,
        version: 1,
        create_time: Some(time),
        update_time: Some(time),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let raw = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50099".to_owned());
    let addr: SocketAddr = raw
        .parse()
        .with_context(|| format!("listen address {raw:?}: expected host:port"))?;
    let service = Bare {
        reply: GetProductResponse {
            product: Some(sample()),
        },
    };
    println!("bare_tonic listening on {addr}");
    // TCP_NODELAY as the server kit sets it, so the comparison is not about Nagle.
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(ProductServiceServer::new(service))
        .serve(addr)
        .await
        .with_context(|| format!("serving on {addr}"))
}
