//! What product-service promises, written once and run on each backend.

use std::{collections::HashMap, time::Duration};

use shop_common::{
    auth::Revocation,
    clock::now_ms,
    events::{Envelope, EventPublisher as _},
};
use shop_proto::{common::v1::Money, events::v1::OrderCancelled, product::v1 as pb};
use tonic::Code;

use crate::helpers::{Backend, Shop, bearer, product};

fn status<T>(result: Result<T, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn walk(shop: &Shop, request: pb::ListProductsRequest) -> anyhow::Result<Vec<pb::Product>> {
    let mut all = Vec::new();
    let mut request = request;
    loop {
        let page = shop
            .client()
            .list_products(request.clone())
            .await?
            .into_inner();
        all.extend(page.products);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}

fn update(product: pb::Product, paths: &[&str]) -> pb::UpdateProductRequest {
    pb::UpdateProductRequest {
        product: Some(product),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

pub(crate) async fn an_admin_creates_updates_and_deletes_products_and_anyone_reads_them(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let mut mug = product("MUG-1", "kitchen", 1299, 5);
    mug.image_url = "https://img.example.com/mug.png".to_owned();
    mug.attributes = HashMap::from([("colour".to_owned(), "blue".to_owned())]);
    let created = shop.create(mug.clone()).await?;
    assert_eq!(created.version, 1);
    assert_eq!(
        created.attributes.get("colour").map(String::as_str),
        Some("blue")
    );

    let read = shop.get(&created.product_id).await?;
    assert_eq!(
        read, created,
        "reads need no token and give back what was stored"
    );

    let renamed = pb::Product {
        product_id: created.product_id.clone(),
        version: created.version,
        name: "Big Blue Mug".to_owned(),
        ..pb::Product::default()
    };
    let updated = shop
        .client()
        .update_product(bearer(update(renamed, &["name"]), &shop.admin))
        .await?
        .into_inner()
        .product
        .ok_or_else(|| anyhow::anyhow!("no product"))?;
    assert_eq!(
        (updated.name.as_str(), updated.version),
        ("Big Blue Mug", 2)
    );
    assert_eq!(
        (
            updated.sku.as_str(),
            updated.price.clone(),
            updated.stock,
            updated.attributes.clone()
        ),
        (
            created.sku.as_str(),
            created.price.clone(),
            created.stock,
            created.attributes.clone()
        ),
        "fields outside the mask are kept"
    );

    let delete = || pb::DeleteProductRequest {
        product_id: created.product_id.clone(),
    };
    shop.client()
        .delete_product(bearer(delete(), &shop.admin))
        .await?;
    let gone = shop.get(&created.product_id).await;
    assert!(gone.is_err());
    let again = shop
        .client()
        .delete_product(bearer(delete(), &shop.admin))
        .await;
    assert_eq!(
        status(again),
        (
            Code::NotFound,
            format!("product {} not found", created.product_id)
        )
    );
    shop.stop().await
}

pub(crate) async fn stale_updates_are_aborted_and_skus_stay_unique(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let first = shop.create(product("SKU-A", "books", 500, 1)).await?;
    let second = shop.create(product("SKU-B", "books", 700, 1)).await?;
    let rename = |name: &str, version| pb::Product {
        product_id: first.product_id.clone(),
        version,
        name: name.to_owned(),
        ..pb::Product::default()
    };
    shop.client()
        .update_product(bearer(update(rename("One", 1), &["name"]), &shop.admin))
        .await?;
    let stale = shop
        .client()
        .update_product(bearer(update(rename("Two", 1), &["name"]), &shop.admin))
        .await;
    let (code, message) = status(stale);
    assert_eq!(code, Code::Aborted, "{message}");
    assert!(message.contains("read it again and retry"), "{message}");
    assert_eq!(shop.get(&first.product_id).await?.name, "One");

    let duplicate = shop
        .client()
        .create_product(bearer(
            pb::CreateProductRequest {
                product: Some(product("SKU-A", "books", 1, 1)),
            },
            &shop.admin,
        ))
        .await;
    let (code, message) = status(duplicate);
    assert_eq!(
        (code, message.as_str()),
        (
            Code::AlreadyExists,
            "a product with sku SKU-A already exists"
        )
    );
    let steal = pb::Product {
        product_id: second.product_id.clone(),
        version: second.version,
        sku: "SKU-A".to_owned(),
        ..pb::Product::default()
    };
    let stolen = shop
        .client()
        .update_product(bearer(update(steal, &["sku"]), &shop.admin))
        .await;
    assert_eq!(status(stolen).0, Code::AlreadyExists);
    assert_eq!(shop.get(&second.product_id).await?.sku, "SKU-B");
    shop.stop().await
}

pub(crate) async fn bad_input_is_refused_naming_the_field(backend: Backend) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let existing = shop.create(product("OK-1", "kitchen", 100, 3)).await?;
    let create = |p: pb::Product| {
        let mut client = shop.client();
        let request = bearer(pb::CreateProductRequest { product: Some(p) }, &shop.admin);
        async move { status(client.create_product(request).await) }
    };
    let mut negative = product("NEG-1", "kitchen", 0, 1);
    negative.price = Some(Money {
        amount_minor: -5,
        currency: "EUR".to_owned(),
    });
    let cases = [
        (negative, "product.price.amount_minor must not be negative"),
        (
            product("", "kitchen", 1, 1),
            "product.sku must be 1 to 64 characters",
        ),
        (
            product("BAD SKU", "kitchen", 1, 1),
            "product.sku may hold only letters, digits, '-', '_' and '.'",
        ),
        (
            product("S-1", "", 1, 1),
            "product.category must be 1 to 64 characters",
        ),
        (
            product("S-2", "kitchen", 1, -1),
            "product.stock must be between 0 and 1000000",
        ),
    ];
    for (bad, message) in cases {
        assert_eq!(
            create(bad).await,
            (Code::InvalidArgument, message.to_owned())
        );
    }

    let list = |page_size, page_token: &str| {
        let mut client = shop.client();
        let request = pb::ListProductsRequest {
            page_size,
            page_token: page_token.to_owned(),
            ..Default::default()
        };
        async move { status(client.list_products(request).await) }
    };
    let too_big = (
        Code::InvalidArgument,
        "page_size must be between 1 and 100".to_owned(),
    );
    assert_eq!(list(1000, "").await, too_big);
    assert_eq!(list(-1, "").await, too_big);
    assert_eq!(
        list(10, "not-a-token").await,
        (
            Code::InvalidArgument,
            "page_token is not a page token from a previous response".to_owned()
        )
    );
    let get = shop
        .client()
        .get_product(pb::GetProductRequest {
            product_id: "42".to_owned(),
        })
        .await;
    assert_eq!(
        status(get),
        (
            Code::InvalidArgument,
            "product_id must be a UUID".to_owned()
        )
    );
    let unknown = new_id();
    let missing = shop
        .client()
        .get_product(pb::GetProductRequest {
            product_id: unknown.clone(),
        })
        .await;
    assert_eq!(
        status(missing),
        (Code::NotFound, format!("product {unknown} not found"))
    );

    let no_version = pb::Product {
        product_id: existing.product_id.clone(),
        name: "x".to_owned(),
        ..pb::Product::default()
    };
    let (code, message) = status(
        shop.client()
            .update_product(bearer(update(no_version, &["name"]), &shop.admin))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("product.version is required"),
        "{message}"
    );
    let bad_path = pb::Product {
        product_id: existing.product_id.clone(),
        version: existing.version,
        ..pb::Product::default()
    };
    let (code, message) = status(
        shop.client()
            .update_product(bearer(update(bad_path, &["version"]), &shop.admin))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("update_mask.paths[0]"), "{message}");

    for (items, message) in [
        (
            vec![(existing.product_id.as_str(), 0)],
            "items[0].quantity must be between 1 and 1000",
        ),
        (
            vec![(existing.product_id.as_str(), 10_000)],
            "items[0].quantity must be between 1 and 1000",
        ),
        (vec![], "items must hold 1 to 50 items"),
        (vec![("nope", 1)], "items[0].product_id must be a UUID"),
    ] {
        assert_eq!(
            status(shop.reserve(&new_id(), &items).await),
            (Code::InvalidArgument, message.to_owned())
        );
    }
    // Nothing was half-written: the catalogue holds only the one valid product, unchanged.
    let all = walk(&shop, pb::ListProductsRequest::default()).await?;
    assert_eq!(all, vec![existing]);
    shop.stop().await
}

pub(crate) async fn only_admins_write_and_only_services_reserve(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let item = shop.create(product("P-1", "toys", 100, 5)).await?;
    let create_as = |token: Option<&str>| {
        let message = pb::CreateProductRequest {
            product: Some(product("P-2", "toys", 100, 1)),
        };
        let request = match token {
            Some(token) => bearer(message, token),
            None => tonic::Request::new(message),
        };
        let mut client = shop.client();
        async move { status(client.create_product(request).await).0 }
    };
    assert_eq!(
        create_as(Some(&shop.customer)).await,
        Code::PermissionDenied
    );
    assert_eq!(create_as(Some(&shop.service)).await, Code::PermissionDenied);
    assert_eq!(create_as(None).await, Code::Unauthenticated);
    assert_eq!(create_as(Some("not-a-token")).await, Code::Unauthenticated);

    for token in [&shop.customer, &shop.admin] {
        let request = pb::ReserveStockRequest {
            order_id: new_id(),
            items: vec![pb::StockItem {
                product_id: item.product_id.clone(),
                quantity: 1,
            }],
        };
        let refused = shop.client().reserve_stock(bearer(request, token)).await;
        assert_eq!(status(refused).0, Code::PermissionDenied);
    }
    assert_eq!(shop.get(&item.product_id).await?.stock, 5);
    shop.stop().await
}

pub(crate) async fn lists_filter_by_category_price_and_text(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let mut blue = product("K-1", "kitchen", 1200, 1);
    blue.name = "Big Blue MUG".to_owned();
    let mut tea = product("K-2", "kitchen", 800, 1);
    tea.description = "a mug of tea, 100% cotton cosy".to_owned();
    let mut book = product("B-1", "books", 2500, 1);
    book.name = "Mugs Through History".to_owned();
    let plate = product("K-3", "kitchen", 3000, 1);
    for p in [blue, tea, book, plate] {
        shop.create(p).await?;
    }
    let skus = |request: pb::ListProductsRequest| async {
        let found = walk(&shop, request).await?;
        let mut skus: Vec<String> = found.into_iter().map(|p| p.sku).collect();
        skus.sort();
        anyhow::Ok(skus)
    };
    let query = |q: &str| pb::ListProductsRequest {
        query: q.to_owned(),
        ..Default::default()
    };
    assert_eq!(skus(query("mug")).await?, ["B-1", "K-1", "K-2"]);
    assert_eq!(skus(query("MUG OF")).await?, ["K-2"]);
    assert_eq!(
        skus(query("100%")).await?,
        ["K-2"],
        "% is a literal, not a wildcard"
    );
    assert!(skus(query("_")).await?.is_empty(), "_ is a literal too");
    let kitchen = pb::ListProductsRequest {
        category: "kitchen".to_owned(),
        ..Default::default()
    };
    assert_eq!(skus(kitchen.clone()).await?, ["K-1", "K-2", "K-3"]);
    let affordable = pb::ListProductsRequest {
        min_price_minor: 1000,
        max_price_minor: 2500,
        ..kitchen.clone()
    };
    assert_eq!(skus(affordable).await?, ["K-1"]);
    let mugs_in_kitchen = pb::ListProductsRequest {
        query: "mug".to_owned(),
        max_price_minor: 1000,
        ..kitchen
    };
    assert_eq!(skus(mugs_in_kitchen).await?, ["K-2"]);
    shop.stop().await
}

pub(crate) async fn pagination_walks_the_catalogue_once_while_products_are_added(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let mut before = Vec::new();
    for i in 0..25 {
        before.push(
            shop.create(product(&format!("OLD-{i:02}"), "books", 100, 1))
                .await?
                .sku,
        );
    }
    let walking = walk(
        &shop,
        pb::ListProductsRequest {
            page_size: 4,
            ..Default::default()
        },
    );
    let adding = async {
        for i in 0..15 {
            shop.create(product(&format!("NEW-{i:02}"), "books", 100, 1))
                .await?;
        }
        anyhow::Ok(())
    };
    let (walked, added) = tokio::join!(walking, adding);
    added?;
    let seen: Vec<String> = walked?.into_iter().map(|p| p.sku).collect();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no product twice: {seen:?}");
    for sku in &before {
        assert!(seen.contains(sku), "{sku} was skipped");
    }
    let all = walk(&shop, pb::ListProductsRequest::default()).await?;
    assert_eq!(all.len(), 40);
    shop.stop().await
}

pub(crate) async fn a_hundred_orders_racing_for_ten_units_get_exactly_ten(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let scarce = shop.create(product("RARE-1", "toys", 9999, 10)).await?;
    let attempts = (0..100).map(|_| {
        let id = scarce.product_id.clone();
        let shop = &shop;
        async move { shop.reserve(&new_id(), &[(&id, 1)]).await }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let reserved = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused: Vec<Code> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(tonic::Status::code))
        .collect();
    assert_eq!(reserved, 10);
    assert!(
        refused.iter().all(|c| *c == Code::FailedPrecondition),
        "{refused:?}"
    );
    assert_eq!(shop.get(&scarce.product_id).await?.stock, 0);
    shop.stop().await
}

pub(crate) async fn reserving_twice_for_one_order_takes_stock_once(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let item = shop.create(product("TWICE-1", "toys", 250, 10)).await?;
    let order = new_id();
    let first = shop.reserve(&order, &[(&item.product_id, 3)]).await?;
    let line = &first.items[0];
    assert_eq!((line.sku.as_str(), line.quantity), ("TWICE-1", 3));
    assert_eq!(line.unit_price.as_ref().map(|m| m.amount_minor), Some(250));
    let second = shop.reserve(&order, &[(&item.product_id, 3)]).await?;
    assert_eq!(second, first);
    assert_eq!(shop.get(&item.product_id).await?.stock, 7);

    // Concurrent repeats of one order: still one reservation.
    let racing = new_id();
    let lines = [(item.product_id.as_str(), 2)];
    let repeats = (0..10).map(|_| shop.reserve(&racing, &lines));
    let outcomes = futures::future::join_all(repeats).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(shop.get(&item.product_id).await?.stock, 5);

    // A refusal is an outcome too: the same order gets the same answer later.
    let greedy = new_id();
    let refused = status(shop.reserve(&greedy, &[(&item.product_id, 6)]).await);
    assert_eq!(refused.0, Code::FailedPrecondition);
    assert!(refused.1.contains("TWICE-1"), "{}", refused.1);
    assert_eq!(
        status(shop.reserve(&greedy, &[(&item.product_id, 6)]).await),
        refused
    );
    shop.stop().await
}

pub(crate) async fn a_reservation_takes_every_item_or_none_and_release_gives_it_back(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let plenty = shop.create(product("PLENTY-1", "home", 100, 5)).await?;
    let last = shop.create(product("LAST-1", "home", 100, 1)).await?;
    let (a, b) = (plenty.product_id.as_str(), last.product_id.as_str());

    let (code, message) = status(shop.reserve(&new_id(), &[(a, 2), (b, 2)]).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(
        message.contains("LAST-1") && message.contains("2 requested, 1 available"),
        "{message}"
    );
    assert_eq!(
        shop.get(a).await?.stock,
        5,
        "nothing taken from the first item"
    );

    let unknown = new_id();
    let (code, message) = status(shop.reserve(&new_id(), &[(a, 1), (&unknown, 1)]).await);
    assert_eq!(
        (code, message),
        (Code::NotFound, format!("product {unknown} not found"))
    );
    assert_eq!(shop.get(a).await?.stock, 5);

    let order = new_id();
    let reserved = shop.reserve(&order, &[(a, 2), (b, 1)]).await?;
    assert_eq!(reserved.items.len(), 2);
    assert_eq!((shop.get(a).await?.stock, shop.get(b).await?.stock), (3, 0));

    let release = |order_id: &str| {
        let request = pb::ReleaseStockRequest {
            order_id: order_id.to_owned(),
        };
        let mut client = shop.client();
        let request = bearer(request, &shop.service);
        async move { anyhow::Ok(client.release_stock(request).await?.into_inner().released) }
    };
    assert!(release(&order).await?);
    assert_eq!((shop.get(a).await?.stock, shop.get(b).await?.stock), (5, 1));
    assert!(!release(&order).await?, "a second release finds nothing");
    let (code, message) = status(shop.reserve(&order, &[(a, 2), (b, 1)]).await);
    assert_eq!(
        code,
        Code::FailedPrecondition,
        "a released order id holds no stock again"
    );
    assert!(message.contains("was released"), "{message}");
    assert!(
        !release(&new_id()).await?,
        "an unknown order has nothing to release"
    );
    assert_eq!((shop.get(a).await?.stock, shop.get(b).await?.stock), (5, 1));
    shop.stop().await
}

pub(crate) async fn a_cancelled_order_releases_its_stock(backend: Backend) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let item = shop.create(product("CANCEL-1", "home", 100, 4)).await?;
    let order = new_id();
    shop.reserve(&order, &[(&item.product_id, 3)]).await?;
    assert_eq!(shop.get(&item.product_id).await?.stock, 1);
    let cancelled = Envelope::new(
        "order-service",
        &OrderCancelled {
            order_id: order.clone(),
            ..Default::default()
        },
    );
    // Delivered twice, as at-least-once delivery may: released once.
    shop.bus.publish(&cancelled).await?;
    shop.bus.publish(&cancelled).await?;
    let mut stock = 0;
    for _ in 0..100 {
        stock = shop.get(&item.product_id).await?.stock;
        if stock == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stock, 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shop.get(&item.product_id).await?.stock, 4, "released once");
    shop.stop().await
}

/// `user.sessions_revoked` for the admin: the admin's token is refused from then on (an
/// actionable UNAUTHENTICATED), also after product-service restarts with nothing redelivered,
/// because the revocation is kept in the catalogue's database.
pub(crate) async fn a_revoked_session_is_refused_and_stays_refused_after_a_restart(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(mut shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    async fn create(shop: &Shop, token: &str) -> (Code, String) {
        let request = pb::CreateProductRequest {
            product: Some(product(&format!("REVOKE-{}", new_id()), "home", 100, 1)),
        };
        status(shop.client().create_product(bearer(request, token)).await)
    }
    assert_eq!(create(&shop, &shop.admin).await.0, Code::Ok);
    let now = now_ms();
    let revoked = Revocation {
        user_id: shop.admin_id.clone(),
        not_before_ms: now,
        forget_after_ms: now + 15 * 60 * 1000,
    };
    let event = Envelope::new("user-service", &revoked.to_event("password_changed"));
    // Delivered twice, as at-least-once delivery may.
    shop.bus.publish(&event).await?;
    shop.bus.publish(&event).await?;
    let mut refused = (Code::Ok, String::new());
    for _ in 0..100 {
        refused = create(&shop, &shop.admin).await;
        if refused.0 != Code::Ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused.0, Code::Unauthenticated, "{}", refused.1);
    assert!(refused.1.contains("sign in again"), "{}", refused.1);
    assert_eq!(
        create(&shop, &shop.customer).await.0,
        Code::PermissionDenied,
        "other users' tokens still pass"
    );

    shop.restart_products().await?;
    let (code, message) = create(&shop, &shop.admin).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    shop.stop().await
}

/// The read cache (which never expires in these tests, see `helpers`): whatever changes a
/// product, through the API or an event, shows in the very next read of it and of every listing
/// it is or was on.
pub(crate) async fn a_change_shows_in_the_next_read_of_the_product_and_of_its_listings(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(shop) = Shop::start(backend).await? else {
        return Ok(());
    };
    let listed = |category: &str, query: &str| {
        let request = pb::ListProductsRequest {
            category: category.to_owned(),
            query: query.to_owned(),
            ..Default::default()
        };
        let shop = &shop;
        async move {
            let found = walk(shop, request).await?;
            let mut found: Vec<(String, i32)> =
                found.into_iter().map(|p| (p.sku, p.stock)).collect();
            found.sort();
            anyhow::Ok(found)
        }
    };
    let stock = |id: String| {
        let shop = &shop;
        async move { anyhow::Ok(shop.get(&id).await?.stock) }
    };
    let lamp = shop.create(product("LAMP-1", "home", 4500, 5)).await?;
    let id = lamp.product_id.clone();
    let at = |stock: i32| vec![("LAMP-1".to_owned(), stock)];

    // Read once, so the cache holds the product and these listings.
    assert_eq!(shop.get(&id).await?, lamp);
    assert_eq!(listed("home", "").await?, at(5));
    assert_eq!(listed("office", "").await?, []);
    assert_eq!(listed("", "desk").await?, []);

    let moved = pb::Product {
        product_id: id.clone(),
        version: lamp.version,
        name: "Desk Lamp".to_owned(),
        category: "office".to_owned(),
        ..pb::Product::default()
    };
    shop.client()
        .update_product(bearer(update(moved, &["name", "category"]), &shop.admin))
        .await?;
    let read = shop.get(&id).await?;
    assert_eq!(
        (read.name.as_str(), read.category.as_str(), read.version),
        ("Desk Lamp", "office", 2)
    );
    assert_eq!(listed("home", "").await?, [], "moved out of home");
    assert_eq!(listed("office", "").await?, at(5), "moved into office");
    assert_eq!(listed("", "desk").await?, at(5), "found by its new name");

    let order = new_id();
    shop.reserve(&order, &[(&id, 2)]).await?;
    assert_eq!(stock(id.clone()).await?, 3, "a reservation shows at once");
    assert_eq!(listed("office", "").await?, at(3));
    let released = shop
        .client()
        .release_stock(bearer(
            pb::ReleaseStockRequest {
                order_id: order.clone(),
            },
            &shop.service,
        ))
        .await?
        .into_inner()
        .released;
    assert!(released);
    assert_eq!(stock(id.clone()).await?, 5, "a release shows at once");
    assert_eq!(listed("office", "").await?, at(5));

    let cancelled = new_id();
    shop.reserve(&cancelled, &[(&id, 4)]).await?;
    assert_eq!(stock(id.clone()).await?, 1);
    shop.bus
        .publish(&Envelope::new(
            "order-service",
            &OrderCancelled {
                order_id: cancelled,
                ..Default::default()
            },
        ))
        .await?;
    let mut seen = 1;
    for _ in 0..100 {
        seen = stock(id.clone()).await?;
        if seen == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen, 5,
        "a release by the order.cancelled consumer shows too"
    );
    assert_eq!(listed("office", "").await?, at(5));

    let second = shop.create(product("LAMP-2", "office", 3000, 2)).await?;
    assert_eq!(
        listed("office", "").await?,
        [("LAMP-1".to_owned(), 5), ("LAMP-2".to_owned(), 2)],
        "a new product shows in a listing read before"
    );
    shop.client()
        .delete_product(bearer(
            pb::DeleteProductRequest {
                product_id: second.product_id.clone(),
            },
            &shop.admin,
        ))
        .await?;
    let gone = shop
        .client()
        .get_product(pb::GetProductRequest {
            product_id: second.product_id.clone(),
        })
        .await;
    assert_eq!(status(gone).0, Code::NotFound, "a deleted product is gone");
    assert_eq!(
        listed("office", "").await?,
        at(5),
        "a deleted product leaves its listings"
    );
    shop.stop().await
}
