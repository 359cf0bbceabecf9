//! The gRPC surface: decode and validate, call the [`Catalogue`], encode. Who may call what is
//! the table in [`policy`].

use std::sync::Arc;

use shop_common::{
    Error,
    auth::{Access, Policy, Role},
    paging::{Cursor, page, page_size},
};
use shop_proto::{
    common::v1::Money,
    product::v1::{self as pb, product_service_server::ProductService},
};
use tonic::{Request, Response, Status};

use crate::{
    catalogue::Catalogue,
    domain::{
        ListFilter, ReservedLine, expected_version, parse_fields, parse_lines, parse_stock, uuid,
    },
};

/// Every method and who may call it; anything missing is denied.
pub(crate) fn policy() -> Policy {
    let method = |name: &str| format!("/shop.product.v1.ProductService/{name}");
    let admin: &'static [Role] = &[Role::Admin];
    let table = [
        ("GetProduct", Access::Public),
        ("ListProducts", Access::Public),
        ("CreateProduct", Access::Roles(admin)),
        ("UpdateProduct", Access::Roles(admin)),
        ("DeleteProduct", Access::Roles(admin)),
        ("ReserveStock", Access::Roles(&[Role::Service])),
        ("ReleaseStock", Access::Roles(&[Role::Service])),
    ]
    .map(|(name, access)| (method(name), access));
    Policy::new(table.iter().map(|(path, access)| (path.as_str(), *access)))
}

pub(crate) struct ProductApi {
    pub(crate) catalogue: Arc<Catalogue>,
}

fn reserved_to_pb(line: &ReservedLine) -> pb::ReservedItem {
    pb::ReservedItem {
        product_id: line.product_id.clone(),
        sku: line.sku.clone(),
        name: line.name.clone(),
        quantity: line.quantity,
        unit_price: Some(Money {
            amount_minor: line.price_minor,
            currency: line.currency.clone(),
        }),
    }
}

#[tonic::async_trait]
impl ProductService for ProductApi {
    #[tracing::instrument(skip_all)]
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let product = request
            .into_inner()
            .product
            .ok_or_else(|| Error::invalid("product", "is required"))?;
        let fields = parse_fields("product", &product)?;
        let stock = parse_stock("product.stock", product.stock)?;
        let created = self.catalogue.create(fields, stock).await?;
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(created.to_pb()),
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let id = uuid("product_id", &request.get_ref().product_id)?;
        let product = self.catalogue.get(&id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product.to_pb()),
        }))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size("page_size", req.page_size)?;
        let after = Cursor::decode("page_token", &req.page_token)?;
        let filter = ListFilter::parse(&req)?;
        let rows = self
            .catalogue
            .list(&filter, after.as_ref(), limit + 1)
            .await?;
        let (products, next_page_token) = page(rows, limit, |p| Cursor {
            created_at_ms: p.created_at_ms,
            id: p.id.clone(),
        });
        Ok(Response::new(pb::ListProductsResponse {
            products: products.iter().map(|p| p.to_pb()).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        let req = request.into_inner();
        let new = req
            .product
            .ok_or_else(|| Error::invalid("product", "is required"))?;
        let id = uuid("product.product_id", &new.product_id)?;
        let version = expected_version(&new)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self.catalogue.update(&id, version, &new, &paths).await?;
        Ok(Response::new(pb::UpdateProductResponse {
            product: Some(updated.to_pb()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_product(
        &self,
        request: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        let id = uuid("product_id", &request.get_ref().product_id)?;
        self.catalogue.delete(&id).await?;
        Ok(Response::new(pb::DeleteProductResponse {}))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let req = request.into_inner();
        let order_id = uuid("order_id", &req.order_id)?;
        let lines = parse_lines(&req.items)?;
        let reserved = self.catalogue.reserve(&order_id, &lines).await?;
        Ok(Response::new(pb::ReserveStockResponse {
            order_id,
            items: reserved.iter().map(reserved_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn release_stock(
        &self,
        request: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockResponse>, Status> {
        let order_id = uuid("order_id", &request.get_ref().order_id)?;
        let released = self.catalogue.release(&order_id).await?;
        Ok(Response::new(pb::ReleaseStockResponse { released }))
    }
}
