//! When requests are due. Closed model: a fixed number of virtual users, each due again a think
//! time after its previous step ended. Open model: arrivals at a set rate, whatever the server is
//! doing. Either way a request is timed from its due time, not from when it could be sent, so a
//! stalled server (or a client short of connections) cannot hide its latency: no coordinated
//! omission. Both stop by themselves: nothing is due after the deadline, and whatever is still
//! unanswered a grace period later is cut off and recorded as such.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use super::{
    driver::Driver,
    journey::{Context, Scenario, Shopper},
    report,
};

/// A think time drawn uniformly from `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Think {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Think {
    pub(crate) fn sample(self, rng: &mut fastrand::Rng) -> Duration {
        if self.max <= self.min {
            self.min
        } else {
            self.min + (self.max - self.min).mul_f64(rng.f64())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Model {
    /// User `i` of `n` starts `ramp_up * i / n` after the start, its first step a think time
    /// later (so users do not all fire at once).
    Closed {
        users: u32,
        think: Think,
        ramp_up: Duration,
    },
    /// `per_second` arrivals (each one step of the scenario), reached linearly over `ramp_up`.
    Open { per_second: f64, ramp_up: Duration },
}

/// How to run: the model, its limits, and whether to print progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) scenario: Scenario,
    pub(crate) model: Model,
    /// Closed: requests in flight at once; open: arrivals in progress at once. Beyond it, due
    /// requests wait, and the wait counts.
    pub(crate) max_in_flight: usize,
    /// After the deadline, how long answers are still awaited.
    pub(crate) grace: Duration,
    pub(crate) seed: u64,
    pub(crate) progress: bool,
}

/// Seeds of users and arrivals: spread apart, so neighbours do not draw alike.
fn seed_of(base: u64, index: u64) -> u64 {
    base ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// When arrival `index` (from 0) is due, after the start: the rate grows linearly from 0 to
/// `per_second` over `ramp_up` (so `per_second * ramp_up / 2` arrivals come during the ramp),
/// then stays.
pub(crate) fn arrival_offset(index: u64, per_second: f64, ramp_up: Duration) -> Duration {
    let n = index as f64;
    let ramp = ramp_up.as_secs_f64();
    let during_ramp = per_second * ramp / 2.0;
    let seconds = if n < during_ramp {
        (2.0 * ramp * n / per_second).sqrt()
    } else {
        ramp + (n - during_ramp) / per_second
    };
    Duration::from_secs_f64(seconds.max(0.0))
}

/// Runs the load from `ctx.recorder`'s start until everything due before `ctx.deadline` is
/// answered or cut off.
pub(crate) async fn run<D: Driver>(ctx: Arc<Context<D>>, schedule: Schedule) {
    let ticker = tokio::spawn(tick(ctx.clone(), schedule.progress));
    let cut = ctx.deadline + schedule.grace;
    match schedule.model {
        Model::Closed {
            users,
            think,
            ramp_up,
        } => closed(&ctx, &schedule, users, think, ramp_up, cut).await,
        Model::Open {
            per_second,
            ramp_up,
        } => open(&ctx, &schedule, per_second, ramp_up, cut).await,
    }
    ticker.abort();
    // The ticker only reads; whatever it was doing is not needed any more.
    let _ = ticker.await;
    ctx.recorder.tick(Instant::now());
}

/// Once a second: the timeline's next point, and the progress line on stderr.
async fn tick<D: Driver>(ctx: Arc<Context<D>>, progress: bool) {
    let start = ctx.recorder.started();
    let mut every =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = every.tick().await;
        let point = ctx.recorder.tick(now);
        if progress {
            let (p99, _, errors) = ctx.recorder.so_far();
            eprintln!("{}", report::progress_line(&point, p99, errors));
        }
    }
}

async fn closed<D: Driver>(
    ctx: &Arc<Context<D>>,
    schedule: &Schedule,
    users: u32,
    think: Think,
    ramp_up: Duration,
    cut: Instant,
) {
    let start = ctx.recorder.started();
    let slots = Arc::new(Semaphore::new(schedule.max_in_flight));
    let mut running = JoinSet::new();
    for index in 0..users {
        let offset = ramp_up.mul_f64(f64::from(index) / f64::from(users));
        let mut shopper = Shopper::new(
            ctx.clone(),
            index as usize,
            seed_of(schedule.seed, u64::from(index)),
            Some(slots.clone()),
        );
        let (deadline, scenario) = (ctx.deadline, schedule.scenario);
        running.spawn(async move {
            let mut due = start + offset + think.sample(shopper.rng());
            while due < deadline {
                let task = scenario.pick(shopper.rng());
                let ended = shopper.run(task, due).await;
                // Due again a think time after the step ended; if the user cannot send then
                // (no free slot, a busy runtime), the lateness counts against the request.
                due = ended.max(due) + think.sample(shopper.rng());
            }
        });
    }
    let all_done = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout_at(cut, all_done).await.is_err() {
        // Aborting drops each request still waiting, which records itself as cut off.
        running.shutdown().await;
    }
}

async fn open<D: Driver>(
    ctx: &Arc<Context<D>>,
    schedule: &Schedule,
    per_second: f64,
    ramp_up: Duration,
    cut: Instant,
) {
    let start = ctx.recorder.started();
    let slots = Arc::new(Semaphore::new(schedule.max_in_flight));
    let mut rng = fastrand::Rng::with_seed(schedule.seed);
    let mut arrivals = JoinSet::new();
    let mut index = 0u64;
    loop {
        let due = start + arrival_offset(index, per_second, ramp_up);
        if due >= ctx.deadline {
            break;
        }
        // Waiting for a slot holds back every later arrival too; each still counts from its
        // own due time, so the wait shows in their latency.
        let next_slot = async {
            tokio::time::sleep_until(due).await;
            slots.clone().acquire_owned().await
        };
        let Ok(Ok(slot)) = tokio::time::timeout_at(cut, next_slot).await else {
            cut_off_unsent(ctx, schedule.scenario, &mut rng, index, per_second, ramp_up);
            break;
        };
        let task = schedule.scenario.pick(&mut rng);
        let seed = seed_of(schedule.seed, index);
        let mut shopper = Shopper::new(ctx.clone(), index as usize, seed, None);
        arrivals.spawn(async move {
            shopper.run(task, due).await;
            drop(slot);
        });
        while arrivals.try_join_next().is_some() {}
        index += 1;
    }
    let all_done = async { while arrivals.join_next().await.is_some() {} };
    if tokio::time::timeout_at(cut, all_done).await.is_err() {
        arrivals.shutdown().await;
    }
}

/// Arrivals from `first` that were due before the deadline but never got a slot: each is cut
/// off, with the wait it would have had.
fn cut_off_unsent<D: Driver>(
    ctx: &Context<D>,
    scenario: Scenario,
    rng: &mut fastrand::Rng,
    first: u64,
    per_second: f64,
    ramp_up: Duration,
) {
    let start = ctx.recorder.started();
    let now = Instant::now();
    for index in first.. {
        let due = start + arrival_offset(index, per_second, ramp_up);
        if due >= ctx.deadline {
            break;
        }
        let step = scenario.pick(rng).first_step();
        ctx.recorder.cut_off(step, due, now, false);
    }
}

#[cfg(test)]
mod tests;
