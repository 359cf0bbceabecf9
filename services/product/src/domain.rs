//! Products, the rules on their fields, and stock reservations. Parsing is the validation: the
//! store only ever sees values that passed it.

use std::collections::BTreeMap;

use shop_common::{Error, clock::timestamp};
use shop_proto::{common::v1::Money, product::v1 as pb};

const MAX_ATTRIBUTES: usize = 50;
const MAX_STOCK: i32 = 1_000_000;
pub(crate) const MAX_RESERVATION_ITEMS: usize = 50;
pub(crate) const MAX_QUANTITY: i32 = 1000;

/// A product as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Product {
    pub(crate) id: String,
    pub(crate) fields: ProductFields,
    pub(crate) stock: i32,
    pub(crate) version: i64,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
}

/// Everything a client may set, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProductFields {
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) category: String,
    pub(crate) price_minor: i64,
    pub(crate) currency: String,
    pub(crate) image_url: String,
    pub(crate) attributes: BTreeMap<String, String>,
}

impl ProductFields {
    /// Lower-cased name and description: what text search looks in, the same on every store.
    pub(crate) fn search_text(&self) -> String {
        format!("{}\n{}", self.name, self.description).to_lowercase()
    }
}

/// A new product: its fields and the stock on hand.
#[derive(Debug, Clone)]
pub(crate) struct NewProduct {
    pub(crate) id: String,
    pub(crate) fields: ProductFields,
    pub(crate) stock: i32,
}

/// An update: the fields after the change (the current ones merged with the new), and stock.
#[derive(Debug, Clone)]
pub(crate) struct ProductUpdate {
    pub(crate) expected_version: i64,
    pub(crate) fields: ProductFields,
    pub(crate) stock: i32,
}

/// The version an update is made against: the one the client read.
pub(crate) fn expected_version(new: &pb::Product) -> Result<i64, Error> {
    if new.version <= 0 {
        return Err(Error::invalid(
            "product.version",
            "is required: send back the version you read",
        ));
    }
    Ok(new.version)
}

impl ProductUpdate {
    /// The update `new` asks of `current`: the masked fields (or, without a mask, every
    /// non-empty one) replaced and checked again, on the condition that the stored version is
    /// still `expected_version`.
    pub(crate) fn parse(
        current: &Product,
        expected_version: i64,
        new: &pb::Product,
        paths: &[String],
    ) -> Result<Self, Error> {
        let merged = merged(current, new, paths)?;
        Ok(Self {
            expected_version,
            fields: parse_fields("product", &merged)?,
            stock: parse_stock("product.stock", merged.stock)?,
        })
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
    let mut merged = current.to_pb();
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

impl Product {
    pub(crate) fn to_pb(&self) -> pb::Product {
        let product = self;
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
}

/// What ListProducts filters on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ListFilter {
    pub(crate) category: Option<String>,
    /// Lower-cased; matched as a substring of name or description.
    pub(crate) query: Option<String>,
    pub(crate) min_price_minor: Option<i64>,
    pub(crate) max_price_minor: Option<i64>,
}

impl ListFilter {
    pub(crate) fn parse(request: &pb::ListProductsRequest) -> Result<Self, Error> {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let price = |field: &str, value: i64| match value {
            0 => Ok(None),
            v if v > 0 => Ok(Some(v)),
            _ => Err(Error::invalid(field, "must not be negative")),
        };
        let filter = Self {
            category: non_empty(&request.category),
            query: non_empty(&request.query).map(|q| q.to_lowercase()),
            min_price_minor: price("min_price_minor", request.min_price_minor)?,
            max_price_minor: price("max_price_minor", request.max_price_minor)?,
        };
        if let (Some(min), Some(max)) = (filter.min_price_minor, filter.max_price_minor)
            && min > max
        {
            return Err(Error::invalid(
                "min_price_minor",
                "must not be above max_price_minor",
            ));
        }
        if filter
            .query
            .as_ref()
            .is_some_and(|q| q.chars().count() > 200)
        {
            return Err(Error::invalid("query", "must be at most 200 characters"));
        }
        Ok(filter)
    }
}

/// One line of a reservation request: a product at most once, 1 to 1000 units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StockLine {
    pub(crate) product_id: String,
    pub(crate) quantity: i32,
}

/// A line of a reservation that succeeded, with what the product was when reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReservedLine {
    pub(crate) product_id: String,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) quantity: i32,
    pub(crate) price_minor: i64,
    pub(crate) currency: String,
}

/// Parses a product from the API: every field checked, each error naming its field under
/// `prefix` (`product.price.currency`).
pub(crate) fn parse_fields(prefix: &str, p: &pb::Product) -> Result<ProductFields, Error> {
    let field = |name: &str| format!("{prefix}.{name}");
    let sku = p.sku.trim();
    if sku.is_empty() || sku.len() > 64 {
        return Err(Error::invalid(field("sku"), "must be 1 to 64 characters"));
    }
    if !sku
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            field("sku"),
            "may hold only letters, digits, '-', '_' and '.'",
        ));
    }
    let name = bounded(&field("name"), &p.name, 1, 200)?;
    let description = bounded(&field("description"), &p.description, 0, 5000)?;
    let category = bounded(&field("category"), &p.category, 1, 64)?;
    let (price_minor, currency) = money(&field("price"), p.price.as_ref())?;
    let image_url = p.image_url.trim().to_owned();
    let web = image_url.starts_with("https://") || image_url.starts_with("http://");
    if !(image_url.is_empty() || web) || image_url.len() > 2048 {
        return Err(Error::invalid(
            field("image_url"),
            "must be empty or an http(s) URL of at most 2048 characters",
        ));
    }
    if p.attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::invalid(
            field("attributes"),
            format!("must hold at most {MAX_ATTRIBUTES} entries"),
        ));
    }
    let mut attributes = BTreeMap::new();
    for (key, value) in &p.attributes {
        if key.trim().is_empty() || key.len() > 64 {
            return Err(Error::invalid(
                field("attributes"),
                format!("key {key:?} must be 1 to 64 characters"),
            ));
        }
        if value.len() > 1024 {
            return Err(Error::invalid(
                format!("{prefix}.attributes[{key}]"),
                "must be at most 1024 characters",
            ));
        }
        attributes.insert(key.trim().to_owned(), value.clone());
    }
    Ok(ProductFields {
        sku: sku.to_owned(),
        name,
        description,
        category,
        price_minor,
        currency,
        image_url,
        attributes,
    })
}

pub(crate) fn parse_stock(field: &str, stock: i32) -> Result<i32, Error> {
    if !(0..=MAX_STOCK).contains(&stock) {
        return Err(Error::invalid(
            field,
            format!("must be between 0 and {MAX_STOCK}"),
        ));
    }
    Ok(stock)
}

fn money(field: &str, money: Option<&Money>) -> Result<(i64, String), Error> {
    let money = money.ok_or_else(|| Error::invalid(field, "is required"))?;
    if money.amount_minor < 0 {
        return Err(Error::invalid(
            format!("{field}.amount_minor"),
            "must not be negative",
        ));
    }
    let currency = money.currency.trim();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(Error::invalid(
            format!("{field}.currency"),
            "must be an ISO 4217 code like EUR",
        ));
    }
    Ok((money.amount_minor, currency.to_owned()))
}

/// A UUID in its canonical lower-case form.
pub(crate) use shop_common::fields::{bounded, uuid};

/// The lines of a reservation: 1 to 50, each product once, 1 to 1000 units each; sorted by
/// product so concurrent reservations lock rows in the same order.
pub(crate) fn parse_lines(items: &[pb::StockItem]) -> Result<Vec<StockLine>, Error> {
    if items.is_empty() || items.len() > MAX_RESERVATION_ITEMS {
        return Err(Error::invalid(
            "items",
            format!("must hold 1 to {MAX_RESERVATION_ITEMS} items"),
        ));
    }
    let mut lines: Vec<StockLine> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let product_id = uuid(&format!("items[{i}].product_id"), &item.product_id)?;
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(Error::invalid(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        if lines.iter().any(|l| l.product_id == product_id) {
            return Err(Error::invalid(
                format!("items[{i}].product_id"),
                "names a product already in the list",
            ));
        }
        lines.push(StockLine {
            product_id,
            quantity: item.quantity,
        });
    }
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> pb::Product {
        pb::Product {
            sku: "MUG-1".into(),
            name: "Mug".into(),
            category: "kitchen".into(),
            price: Some(Money {
                amount_minor: 1299,
                currency: "EUR".into(),
            }),
            ..pb::Product::default()
        }
    }

    fn error(p: &pb::Product) -> Option<String> {
        parse_fields("product", p).err().map(|e| e.to_string())
    }

    #[test]
    fn a_valid_product_parses() {
        let fields = parse_fields("product", &product()).ok();
        assert_eq!(fields.map(|f| f.price_minor), Some(1299));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut p = product();
        p.price = Some(Money {
            amount_minor: -1,
            currency: "EUR".into(),
        });
        assert_eq!(
            error(&p).as_deref(),
            Some("product.price.amount_minor must not be negative")
        );
        let mut p = product();
        p.sku = " ".into();
        assert_eq!(
            error(&p).as_deref(),
            Some("product.sku must be 1 to 64 characters")
        );
        let mut p = product();
        p.price = Some(Money {
            amount_minor: 1,
            currency: "eur".into(),
        });
        assert_eq!(
            error(&p).as_deref(),
            Some("product.price.currency must be an ISO 4217 code like EUR")
        );
        let mut p = product();
        p.image_url = "ftp://x".into();
        assert!(error(&p).is_some_and(|e| e.starts_with("product.image_url")));
    }

    #[test]
    fn reservation_lines_are_checked_and_sorted() {
        let id = |n: u8| format!("00000000-0000-4000-8000-0000000000{n:02}");
        let item = |n: u8, quantity| pb::StockItem {
            product_id: id(n),
            quantity,
        };
        let lines = parse_lines(&[item(2, 1), item(1, 3)]).ok();
        assert_eq!(
            lines.map(|l| l.into_iter().map(|l| l.quantity).collect::<Vec<_>>()),
            Some(vec![3, 1])
        );
        let message = |items: &[pb::StockItem]| parse_lines(items).err().map(|e| e.to_string());
        assert_eq!(
            message(&[item(1, 0)]).as_deref(),
            Some("items[0].quantity must be between 1 and 1000")
        );
        assert_eq!(
            message(&[item(1, 1), item(1, 2)]).as_deref(),
            Some("items[1].product_id names a product already in the list")
        );
        assert_eq!(
            message(&[]).as_deref(),
            Some("items must hold 1 to 50 items")
        );
    }

    #[test]
    fn filters_check_their_bounds() {
        let request = pb::ListProductsRequest {
            min_price_minor: 500,
            max_price_minor: 100,
            ..Default::default()
        };
        assert_eq!(
            ListFilter::parse(&request)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("min_price_minor must not be above max_price_minor")
        );
    }
}
