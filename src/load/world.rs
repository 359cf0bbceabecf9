//! What virtual users pick from, read once before the run: the catalogue's products, its
//! categories and words to search for; and, with `--restock`, enough stock for every checkout.

use std::{collections::BTreeSet, time::Duration};

use super::driver::{Call, Driver, Failure, Product, Reply};

/// Pages read at most: a catalogue far larger than a shopper would browse is sampled, not copied.
const MAX_PAGES: usize = 100;

pub(crate) struct Catalogue {
    pub(crate) products: Vec<Product>,
    pub(crate) categories: Vec<String>,
    pub(crate) terms: Vec<String>,
}

async fn call<D: Driver>(driver: &D, call: Call<'_>, timeout: Duration) -> Result<Reply, Failure> {
    tokio::time::timeout(timeout, driver.call(call))
        .await
        .unwrap_or(Err(Failure::Timeout))
}

impl Catalogue {
    pub(crate) async fn read<D: Driver>(driver: &D, timeout: Duration) -> Result<Self, String> {
        let mut products = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let reply = call(
                driver,
                Call::Catalogue {
                    page_token: &page_token,
                },
                timeout,
            )
            .await
            .map_err(|failure| format!("reading the catalogue: {failure}"))?;
            let Reply::Products {
                products: page,
                next_page_token,
            } = reply
            else {
                return Err("reading the catalogue: the answer has no products".to_owned());
            };
            products.extend(page);
            if next_page_token.is_empty() {
                break;
            }
            page_token = next_page_token;
        }
        if products.is_empty() {
            return Err("the catalogue is empty: there is nothing to browse or buy".to_owned());
        }
        Ok(Self::of(products))
    }

    fn of(products: Vec<Product>) -> Self {
        let categories: BTreeSet<String> = products
            .iter()
            .map(|p| p.category.clone())
            .filter(|c| !c.is_empty())
            .collect();
        // Words of the product names, as a shopper would type them.
        let terms: BTreeSet<String> = products
            .iter()
            .flat_map(|p| p.name.split(|c: char| !c.is_alphanumeric()))
            .filter(|word| word.chars().count() >= 3)
            .map(str::to_lowercase)
            .collect();
        Self {
            products,
            categories: categories.into_iter().collect(),
            terms: terms.into_iter().collect(),
        }
    }

    /// Sets every product's stock to `stock` as the admin signed in with `token`, so a long run's
    /// checkouts do not empty the shelves and fail for that reason.
    pub(crate) async fn restock<D: Driver>(
        &self,
        driver: &D,
        token: &str,
        stock: i32,
        timeout: Duration,
    ) -> Result<(), String> {
        for product in &self.products {
            let update = Call::SetStock {
                token,
                product_id: &product.id,
                version: product.version,
                stock,
            };
            call(driver, update, timeout)
                .await
                .map_err(|failure| format!("restocking {}: {failure}", product.id))?;
        }
        Ok(())
    }
}

/// Logs in the admin for `--restock`.
pub(crate) async fn admin_token<D: Driver>(
    driver: &D,
    email: &str,
    password: &str,
    timeout: Duration,
) -> Result<String, String> {
    match call(driver, Call::Login { email, password }, timeout).await {
        Ok(Reply::Tokens { access, .. }) => Ok(access),
        Ok(_) => Err(format!("logging in {email}: the answer has no tokens")),
        Err(failure) => Err(format!(
            "logging in {email} for --restock (see --admin-email/--admin-password): {failure}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_and_search_terms_come_from_the_products() {
        let product = |name: &str, category: &str| Product {
            id: name.to_owned(),
            name: name.to_owned(),
            category: category.to_owned(),
            version: 1,
        };
        let catalogue = Catalogue::of(vec![
            product("Ceramic Coffee Mug", "kitchen"),
            product("Release It!", "books"),
            product("Go", ""),
        ]);
        assert_eq!(catalogue.categories, ["books", "kitchen"]);
        assert_eq!(catalogue.terms, ["ceramic", "coffee", "mug", "release"]);
    }
}
