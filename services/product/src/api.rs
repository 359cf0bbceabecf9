//! The gRPC surface: decode and validate, call the store, encode. Who may call what is the table
//! in [`policy`].

use std::sync::Arc;

use shop_common::{
    Error,
    auth::{Access, Policy, Role},
    clock::timestamp,
    paging::{Cursor, page, page_size},
};
use shop_proto::{
    common::v1::Money,
    product::v1::{self as pb, product_service_server::ProductService},
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        ListFilter, NewProduct, Product, ProductUpdate, ReservedLine, parse_fields, parse_lines,
        parse_stock, uuid,
    },
    store::ProductStore,
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
    pub(crate) store: Arc<dyn ProductStore>,
}

pub(crate) fn to_pb(product: &Product) -> pb::Product {
    let f = &product.fields;
    pb::Product {
        product_id: product.id.clone(),
        sku: f.sku.clone(),
        name: f.name.clone(),
        description: f.description.clone(),
        category: f.category.clone(),
        price: Some(Money {
            amount_minor: f.price_minor,
            currency: f.currency.clone(),
        }),
        image_url: f.image_url.clone(),
        attributes: f
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        stock: product.stock,
        version: product.version,
        create_time: Some(timestamp(product.created_at_ms)),
        update_time: Some(timestamp(product.updated_at_ms)),
    }
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

const UPDATABLE: [&str; 8] = [
    "sku",
    "name",
    "description",
    "category",
    "price",
    "image_url",
    "attributes",
    "stock",
];

/// The product after the update: the stored one with the masked fields taken from `new` (all
/// non-empty fields of `new` without a mask).
fn merged(current: &Product, new: &pb::Product, paths: &[String]) -> Result<pb::Product, Error> {
    let mut merged = to_pb(current);
    let given = |path: &str| match path {
        "sku" => !new.sku.is_empty(),
        "name" => !new.name.is_empty(),
        "description" => !new.description.is_empty(),
        "category" => !new.category.is_empty(),
        "price" => new.price.is_some(),
        "image_url" => !new.image_url.is_empty(),
        "attributes" => !new.attributes.is_empty(),
        _ => false,
    };
    let paths: Vec<&str> = if paths.is_empty() {
        UPDATABLE.into_iter().filter(|p| given(p)).collect()
    } else {
        paths.iter().map(String::as_str).collect()
    };
    for (i, path) in paths.iter().enumerate() {
        match *path {
            "sku" => merged.sku.clone_from(&new.sku),
            "name" => merged.name.clone_from(&new.name),
            "description" => merged.description.clone_from(&new.description),
            "category" => merged.category.clone_from(&new.category),
            "price" => merged.price.clone_from(&new.price),
            "image_url" => merged.image_url.clone_from(&new.image_url),
            "attributes" => merged.attributes.clone_from(&new.attributes),
            "stock" => merged.stock = new.stock,
            other => {
                return Err(Error::invalid(
                    format!("update_mask.paths[{i}]"),
                    format!(
                        "{other:?} cannot be changed; use one of {}",
                        UPDATABLE.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(merged)
}

#[tonic::async_trait]
impl ProductService for ProductApi {
    #[tracing::instrument(skip_all, err)]
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let product = request
            .into_inner()
            .product
            .ok_or_else(|| Error::invalid("product", "is required"))?;
        let new = NewProduct {
            id: uuid::Uuid::new_v4().to_string(),
            fields: parse_fields("product", &product)?,
            stock: parse_stock("product.stock", product.stock)?,
        };
        let created = self.store.create(&new).await?;
        tracing::info!(product_id = %created.id, sku = %created.fields.sku, "product created");
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(to_pb(&created)),
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let id = uuid("product_id", &request.get_ref().product_id)?;
        let product = self
            .store
            .get(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("product {id}")))?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(to_pb(&product)),
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
        let rows = self.store.list(&filter, after.as_ref(), limit + 1).await?;
        let (products, next_page_token) = page(rows, limit, |p| Cursor {
            created_at_ms: p.created_at_ms,
            id: p.id.clone(),
        });
        Ok(Response::new(pb::ListProductsResponse {
            products: products.iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        let req = request.into_inner();
        let new = req
            .product
            .ok_or_else(|| Error::invalid("product", "is required"))?;
        let id = uuid("product.product_id", &new.product_id)?;
        if new.version <= 0 {
            return Err(Error::invalid(
                "product.version",
                "is required: send back the version you read",
            )
            .into());
        }
        let current = self
            .store
            .get(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("product {id}")))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let merged = merged(&current, &new, &paths)?;
        let update = ProductUpdate {
            expected_version: new.version,
            fields: parse_fields("product", &merged)?,
            stock: parse_stock("product.stock", merged.stock)?,
        };
        let updated = self.store.update(&id, &update).await?;
        Ok(Response::new(pb::UpdateProductResponse {
            product: Some(to_pb(&updated)),
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn delete_product(
        &self,
        request: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        let id = uuid("product_id", &request.get_ref().product_id)?;
        if !self.store.delete(&id).await? {
            return Err(Error::NotFound(format!("product {id}")).into());
        }
        Ok(Response::new(pb::DeleteProductResponse {}))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id), err)]
    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let req = request.into_inner();
        let order_id = uuid("order_id", &req.order_id)?;
        let lines = parse_lines(&req.items)?;
        let reserved = self.store.reserve(&order_id, &lines).await?;
        Ok(Response::new(pb::ReserveStockResponse {
            order_id,
            items: reserved.iter().map(reserved_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id), err)]
    async fn release_stock(
        &self,
        request: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockResponse>, Status> {
        let order_id = uuid("order_id", &request.get_ref().order_id)?;
        let released = self.store.release(&order_id).await?;
        Ok(Response::new(pb::ReleaseStockResponse { released }))
    }
}
