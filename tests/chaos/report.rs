//! The run's report: the faults injected, what the shoppers saw, and each invariant with its
//! numbers; printed as a table, and written as JSON when asked.

use std::{collections::BTreeMap, fmt, sync::atomic::Ordering, time::Duration};

use crate::{faults::Kind, invariants::Check, shoppers::Tally};

#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    fault_kinds: Vec<&'static str>,
    faults: BTreeMap<String, u64>,
    orders: BTreeMap<&'static str, u64>,
    shopping_seconds: f64,
    unsettled_orders: i64,
    unpublished_events: i64,
    invariants: Vec<Check>,
}

impl Report {
    pub(crate) fn new(
        kinds: &[Kind],
        faults: BTreeMap<String, u64>,
        tally: &Tally,
        shopping: Duration,
        (unsettled_orders, unpublished_events): (i64, i64),
        invariants: Vec<Check>,
    ) -> Self {
        let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::SeqCst);
        let orders = BTreeMap::from([
            ("accepted", read(&tally.accepted)),
            ("refused: out of stock", read(&tally.out_of_stock)),
            ("retried calls", read(&tally.retries)),
            ("given up after retries", read(&tally.abandoned)),
            ("cancellations asked", read(&tally.cancel_requests)),
            ("unexpected answers", read(&tally.unexpected)),
        ]);
        Self {
            fault_kinds: kinds.iter().map(|k| k.name()).collect(),
            faults,
            orders,
            shopping_seconds: shopping.as_secs_f64(),
            unsettled_orders,
            unpublished_events,
            invariants,
        }
    }

    pub(crate) fn all_hold(&self) -> bool {
        self.invariants.iter().all(|check| check.holds)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.faults.values().sum();
        writeln!(
            f,
            "chaos run: {total} faults in {:.0} s of shopping ({})",
            self.shopping_seconds,
            self.fault_kinds.join(", ")
        )?;
        for (fault, count) in &self.faults {
            writeln!(f, "  {count:>4}  {fault}")?;
        }
        writeln!(f, "orders:")?;
        for (what, count) in &self.orders {
            writeln!(f, "  {count:>6}  {what}")?;
        }
        writeln!(
            f,
            "after recovery: {} orders not final, {} events unpublished",
            self.unsettled_orders, self.unpublished_events
        )?;
        writeln!(f, "invariants:")?;
        for check in &self.invariants {
            let mark = if check.holds { "ok  " } else { "FAIL" };
            writeln!(f, "  {mark}  {}: {}", check.name, check.numbers)?;
        }
        Ok(())
    }
}
