//! The demo catalogue `shop up` starts with: a few dozen products across six categories, so
//! browsing, search and checkout have something to show.

use std::collections::BTreeMap;

use crate::domain::{NewProduct, ProductFields};

/// Name, description and price in cents.
type Item = (&'static str, &'static str, i64);

const CATALOGUE: [(&str, &[Item]); 6] = [
    (
        "kitchen",
        &[
            (
                "Ceramic Coffee Mug",
                "A 350 ml stoneware mug that keeps its glaze in the dishwasher.",
                1299,
            ),
            (
                "Chef's Knife",
                "20 cm stainless steel blade, full tang, balanced handle.",
                5999,
            ),
            (
                "Pour-Over Kettle",
                "Gooseneck kettle for a slow, even pour.",
                3499,
            ),
            (
                "Cast Iron Skillet",
                "Pre-seasoned 26 cm skillet for stove, oven and fire.",
                4499,
            ),
            (
                "Bamboo Cutting Board",
                "Knife-friendly board with a juice groove.",
                2199,
            ),
            (
                "Espresso Cups (set of 4)",
                "Double-walled glass cups, 80 ml each.",
                2599,
            ),
        ],
    ),
    (
        "books",
        &[
            (
                "The Rust Programming Language",
                "The official book, covering ownership to async.",
                3999,
            ),
            (
                "Designing Data-Intensive Applications",
                "Replication, partitioning, consistency and streams.",
                4599,
            ),
            (
                "Site Reliability Engineering",
                "How Google runs production systems.",
                3899,
            ),
            (
                "Building Microservices",
                "Boundaries, integration and deployment of small services.",
                4199,
            ),
            (
                "Release It!",
                "Stability patterns: circuit breakers, bulkheads, timeouts.",
                3599,
            ),
            (
                "The Phoenix Project",
                "A novel about IT, DevOps and helping your business win.",
                2499,
            ),
        ],
    ),
    (
        "electronics",
        &[
            (
                "Mechanical Keyboard",
                "Tenkeyless, hot-swappable switches, USB-C.",
                8999,
            ),
            (
                "Noise-Cancelling Headphones",
                "Over-ear, 30 hours of battery.",
                19999,
            ),
            (
                "USB-C Hub",
                "Seven ports: HDMI, Ethernet, SD and four USB.",
                4999,
            ),
            (
                "Wireless Mouse",
                "Silent clicks, three devices, one receiver.",
                2999,
            ),
            (
                "27-inch Monitor",
                "1440p IPS panel with a height-adjustable stand.",
                27999,
            ),
            ("Portable SSD 1 TB", "USB 3.2, up to 1050 MB/s.", 10999),
        ],
    ),
    (
        "outdoor",
        &[
            (
                "Trail Running Shoes",
                "Grippy outsole and a rock plate for rough trails.",
                12999,
            ),
            (
                "Two-Person Tent",
                "Freestanding, 1.8 kg, three seasons.",
                24999,
            ),
            (
                "Insulated Water Bottle",
                "750 ml steel bottle, cold for 24 hours.",
                2999,
            ),
            (
                "Headlamp",
                "400 lumens, rechargeable, red night mode.",
                3999,
            ),
            ("Daypack 20 L", "Light pack with a hydration sleeve.", 5999),
            (
                "Camping Stove",
                "Compact gas stove that boils a litre in 4 minutes.",
                4599,
            ),
        ],
    ),
    (
        "home",
        &[
            ("Linen Bed Sheets", "Stonewashed linen, double size.", 11999),
            ("Desk Lamp", "Dimmable LED with a warm-to-cool range.", 4999),
            ("Wool Throw Blanket", "Merino wool, 130 by 170 cm.", 7999),
            ("Scented Candle", "Cedar and bergamot, 45 hours.", 1999),
            (
                "Wall Clock",
                "Silent sweep movement, 30 cm oak frame.",
                3999,
            ),
            ("Plant Pot Set", "Three glazed pots with saucers.", 2999),
        ],
    ),
    (
        "toys",
        &[
            (
                "Wooden Train Set",
                "Forty pieces of beech track and carriages.",
                5999,
            ),
            (
                "Building Bricks Box",
                "Five hundred classic bricks in twelve colours.",
                3999,
            ),
            (
                "Jigsaw Puzzle 1000",
                "A mountain lake at dawn, 1000 pieces.",
                1999,
            ),
            ("Kite", "Single-line delta kite for light winds.", 2499),
            (
                "Board Game: Trains",
                "Build routes across the continent, 2 to 5 players.",
                4499,
            ),
            ("Plush Fox", "Soft and washable, 30 cm.", 1799),
        ],
    ),
];

/// The demo products, each with some stock and a colour attribute for the attribute map.
pub(crate) fn catalogue() -> Vec<NewProduct> {
    let colours = ["red", "blue", "green", "black", "white", "grey"];
    CATALOGUE
        .iter()
        .flat_map(|(category, products)| {
            products
                .iter()
                .enumerate()
                .map(move |(i, (name, description, price))| (category, i, name, description, price))
        })
        .map(|(category, i, name, description, price)| NewProduct {
            id: uuid::Uuid::new_v4().to_string(),
            fields: ProductFields {
                sku: format!("{}-{:03}", category.to_uppercase(), i + 1),
                name: (*name).to_owned(),
                description: (*description).to_owned(),
                category: (*category).to_owned(),
                price_minor: *price,
                currency: "EUR".to_owned(),
                image_url: String::new(),
                attributes: BTreeMap::from([(
                    "colour".to_owned(),
                    colours[i % colours.len()].to_owned(),
                )]),
            },
            stock: 25 + i32::try_from(i).unwrap_or(0) * 5,
        })
        .collect()
}
