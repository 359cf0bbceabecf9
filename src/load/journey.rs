//! What a virtual user does: one step at a time, each a task of one or a few requests. The
//! shopper journey picks its next step by weight, after Google's Online Boutique loadgenerator
//! (its locustfile weighs browsing a product 10, viewing the cart 3, checkout 1): here browse a
//! category 10, view products 10, search 3, check out 1, so one step in 24 is a checkout.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Semaphore, time::Instant};

use super::{
    accounts::Accounts,
    driver::{Call, Driver, Failure, OrderState, Reply},
    stats::{OrderEnd, Recorder, Step},
    world::Catalogue,
};

/// The payment simulator's card that always approves (services/payment/src/provider.rs).
const CARD: &str = "tok_visa";
/// The first wait before polling an order waiting for its payment; each further wait doubles,
/// up to [`POLL_MAX`]. A fixed short interval would multiply the load exactly when the saga is
/// slow (at 10 000 users, polls outnumbered every other request), and a real client backs off.
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(2);
/// The journey's weights; see the module comment.
const JOURNEY: [(Task, u32); 4] = [
    (Task::Browse, 10),
    (Task::View(0), 10),
    (Task::Search, 3),
    (Task::Checkout, 1),
];
/// Products one "view" step looks at, back to back (a product page and what it suggests).
const VIEWS_PER_STEP: std::ops::RangeInclusive<u8> = 1..=3;

/// What each virtual user does, step after step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The shopper journey: browse 10, view 10, search 3, checkout 1 (weights).
    Journey,
    /// ListProducts in a random category.
    Browse,
    /// ListProducts matching a word from the catalogue's product names.
    Search,
    /// GetProduct of a random product.
    GetProduct,
    /// PlaceOrder (tok_visa), then GetOrder until confirmed.
    PlaceOrder,
    /// GET `--url` (REST only).
    Url,
}

impl Scenario {
    pub(crate) fn needs_catalogue(self) -> bool {
        self != Self::Url
    }

    pub(crate) fn needs_accounts(self) -> bool {
        matches!(self, Self::Journey | Self::PlaceOrder)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Journey => "journey",
            Self::Browse => "browse",
            Self::Search => "search",
            Self::GetProduct => "get-product",
            Self::PlaceOrder => "place-order",
            Self::Url => "url",
        }
    }

    /// The next step of a user.
    pub(crate) fn pick(self, rng: &mut fastrand::Rng) -> Task {
        match self {
            Self::Journey => {
                let total: u32 = JOURNEY.iter().map(|(_, w)| w).sum();
                let mut ticket = rng.u32(0..total);
                let mut task = Task::Browse;
                for (candidate, weight) in JOURNEY {
                    if ticket < weight {
                        task = candidate;
                        break;
                    }
                    ticket -= weight;
                }
                match task {
                    Task::View(_) => Task::View(rng.u8(VIEWS_PER_STEP)),
                    other => other,
                }
            }
            Self::Browse => Task::Browse,
            Self::Search => Task::Search,
            Self::GetProduct => Task::View(1),
            Self::PlaceOrder => Task::Checkout,
            Self::Url => Task::Url,
        }
    }
}

/// One step of a virtual user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    Browse,
    /// This many GetProducts, back to back.
    View(u8),
    Search,
    /// PlaceOrder, then GetOrder (backing off from [`POLL_FIRST`]) until the order is final.
    Checkout,
    Url,
}

impl Task {
    /// The kind of its first request.
    pub(crate) fn first_step(self) -> Step {
        match self {
            Self::Browse => Step::Browse,
            Self::View(_) => Step::View,
            Self::Search => Step::Search,
            Self::Checkout => Step::PlaceOrder,
            Self::Url => Step::Url,
        }
    }
}

/// What every virtual user of a run shares.
pub(crate) struct Context<D> {
    pub(crate) driver: D,
    pub(crate) catalogue: Option<Catalogue>,
    pub(crate) accounts: Option<Accounts>,
    pub(crate) recorder: Arc<Recorder>,
    /// No request is due at or after this.
    pub(crate) deadline: Instant,
    /// Per request.
    pub(crate) timeout: Duration,
    /// How long a placed order may take to be confirmed.
    pub(crate) confirm_timeout: Duration,
}

/// One virtual user (closed model) or one arrival (open model).
pub(crate) struct Shopper<D> {
    ctx: Arc<Context<D>>,
    rng: fastrand::Rng,
    /// Its account in the pool (modulo the pool's size).
    account: usize,
    /// Where requests wait for a free slot under `--max-in-flight`, if this user must.
    gate: Option<Arc<Semaphore>>,
}

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        items.get(rng.usize(0..items.len()))
    }
}

impl<D: Driver> Shopper<D> {
    pub(crate) fn new(
        ctx: Arc<Context<D>>,
        index: usize,
        seed: u64,
        gate: Option<Arc<Semaphore>>,
    ) -> Self {
        Self {
            ctx,
            rng: fastrand::Rng::with_seed(seed),
            account: index,
            gate,
        }
    }

    pub(crate) fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    /// Runs `task`, its first request due at `due`. Returns when its last answer came, or `due`
    /// if nothing was due before the deadline.
    pub(crate) async fn run(&mut self, task: Task, due: Instant) -> Instant {
        let ctx = self.ctx.clone();
        let catalogue = ctx.catalogue.as_ref();
        let products = catalogue.map(|c| c.products.as_slice()).unwrap_or_default();
        match task {
            Task::Browse => {
                let categories = catalogue
                    .map(|c| c.categories.as_slice())
                    .unwrap_or_default();
                let category = pick(&mut self.rng, categories).map_or("", String::as_str);
                self.ended(due, Step::Browse, Call::Browse { category })
                    .await
            }
            Task::Search => {
                let terms = catalogue.map(|c| c.terms.as_slice()).unwrap_or_default();
                let query = pick(&mut self.rng, terms).map_or("", String::as_str);
                self.ended(due, Step::Search, Call::Search { query }).await
            }
            Task::View(count) => {
                let mut end = due;
                for _ in 0..count {
                    let Some(product) = pick(&mut self.rng, products) else {
                        break;
                    };
                    let call = Call::View {
                        product_id: &product.id,
                    };
                    match self.send(Step::View, end, call).await {
                        Some((answered, _)) => end = answered,
                        None => break,
                    }
                }
                end
            }
            Task::Checkout => self.checkout(due).await,
            Task::Url => self.ended(due, Step::Url, Call::Url).await,
        }
    }

    async fn ended(&self, due: Instant, step: Step, call: Call<'_>) -> Instant {
        self.send(step, due, call).await.map_or(due, |(end, _)| end)
    }

    /// Places an order and polls it until it is final, the confirmation times out, or the run
    /// ends; records how it ended.
    async fn checkout(&mut self, due: Instant) -> Instant {
        let ctx = self.ctx.clone();
        let (Some(accounts), Some(catalogue)) = (&ctx.accounts, &ctx.catalogue) else {
            return due;
        };
        let Some(product) = pick(&mut self.rng, &catalogue.products) else {
            return due;
        };
        let token = accounts.token(self.account);
        let key = uuid::Uuid::new_v4().to_string();
        let place = Call::PlaceOrder {
            token: &token,
            product_id: &product.id,
            card: CARD,
            idempotency_key: &key,
        };
        let Some((mut end, placed)) = self.send(Step::PlaceOrder, due, place).await else {
            return due;
        };
        let Ok(Reply::Order {
            order_id,
            mut state,
        }) = placed
        else {
            return end;
        };
        let recorder = &ctx.recorder;
        recorder.order_placed();
        let give_up = due + ctx.confirm_timeout;
        let mut pause = POLL_FIRST;
        loop {
            let waited = end.saturating_duration_since(due);
            match state {
                OrderState::Confirmed => {
                    recorder.order_ended(OrderEnd::Confirmed, waited);
                    return end;
                }
                OrderState::Cancelled => {
                    recorder.order_ended(OrderEnd::Cancelled, waited);
                    return end;
                }
                OrderState::Pending => {}
            }
            let next = end + pause;
            pause = (pause * 2).min(POLL_MAX);
            if next >= give_up {
                recorder.order_ended(OrderEnd::NotConfirmed, waited);
                return end;
            }
            // Fetched again each time: a long wait may straddle a token refresh.
            let token = accounts.token(self.account);
            let poll = Call::GetOrder {
                token: &token,
                order_id: &order_id,
            };
            match self.send(Step::GetOrder, next, poll).await {
                None => {
                    recorder.order_ended(OrderEnd::Unsettled, waited);
                    return end;
                }
                Some((answered, Ok(Reply::Order { state: now, .. }))) => {
                    end = answered;
                    state = now;
                }
                // A failed poll is counted under get-order; the order may still settle.
                Some((answered, _)) => end = answered,
            }
        }
    }

    /// Waits until `due`, then sends (once a slot is free); the latency counts from `due` either
    /// way. `None` when `due` is not before the deadline: the run has ended for this user.
    async fn send(
        &self,
        step: Step,
        due: Instant,
        call: Call<'_>,
    ) -> Option<(Instant, Result<Reply, Failure>)> {
        if due >= self.ctx.deadline {
            return None;
        }
        tokio::time::sleep_until(due).await;
        let pending = self.ctx.recorder.pending(step, due);
        let _slot = match &self.gate {
            Some(gate) => gate.acquire().await.ok(),
            None => None,
        };
        let sent = Instant::now();
        let result = tokio::time::timeout(self.ctx.timeout, self.ctx.driver.call(call))
            .await
            .unwrap_or(Err(Failure::Timeout));
        let done = Instant::now();
        pending.answered(sent, done, result.as_ref().map(|_| ()));
        Some((done, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journey_picks_steps_in_proportion_to_their_weights() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0u32; 4];
        for _ in 0..24_000 {
            match Scenario::Journey.pick(&mut rng) {
                Task::Browse => counts[0] += 1,
                Task::View(n) => {
                    assert!(VIEWS_PER_STEP.contains(&n), "{n}");
                    counts[1] += 1;
                }
                Task::Search => counts[2] += 1,
                Task::Checkout => counts[3] += 1,
                Task::Url => panic!("the journey never GETs a URL"),
            }
        }
        // Expected 10 000, 10 000, 3 000 and 1 000 of 24 000 (seeded, so always the same draw).
        for (count, expected) in counts.iter().zip([10_000.0, 10_000.0, 3_000.0, 1_000.0]) {
            assert!(
                (f64::from(*count) - expected).abs() < expected * 0.1,
                "{counts:?}"
            );
        }
        assert_eq!(Scenario::GetProduct.pick(&mut rng), Task::View(1));
        assert_eq!(Scenario::PlaceOrder.pick(&mut rng), Task::Checkout);
    }
}
