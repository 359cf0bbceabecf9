//! Charging cards: the `PaymentProvider` trait, and the deterministic simulator that ships with
//! the service. Providers are called with an idempotency key (the payment id), as real ones
//! (Stripe's `Idempotency-Key`) are: a repeated charge with the same key is the same charge.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    sync::Mutex,
};

use shop_common::BoxFuture;

/// Why a charge did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    /// Final: the card was refused (`card_declined`, `invalid_payment_method`).
    #[error("declined: {0}")]
    Declined(String),
    /// Worth another attempt with the same key (`provider_unavailable`).
    #[error("transient failure: {0}")]
    Transient(String),
}

impl ChargeError {
    /// Whether another attempt may go through: what counts against the provider's breaker.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

pub trait PaymentProvider: Send + Sync {
    /// Charges `amount_minor` of `currency` to the card behind `token`; returns the provider's
    /// charge reference. The same `key` never charges twice.
    fn charge<'a>(
        &'a self,
        key: &'a str,
        amount_minor: i64,
        currency: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<String, ChargeError>>;

    /// Refunds a charge in full; refunding twice is refunding once.
    fn refund<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(), ChargeError>>;
}

/// Test card tokens drive every branch of the saga:
/// `tok_visa` approves; `tok_declined` declines (`card_declined`); `tok_timeout` never answers
/// (the caller's timeout fires); `tok_flaky` fails transiently twice per key, then approves. Any
/// other token is declined as `invalid_payment_method`.
#[derive(Debug, Default)]
pub struct Simulator {
    state: Mutex<Ledger>,
}

/// A provider remembers its charges whatever happens to its callers: with a ledger file the
/// simulator does too, so a refund after a restart finds the charge it refunds. One line per
/// charge (`charge <key> <reference> <amount> <currency>`) or refund (`refund <reference>`),
/// written before the caller hears of it. Written, not synced: the kernel keeps what a killed
/// process wrote, and a simulator need not outlive the machine. An fsync per charge on the
/// async workers every service of `shop up` shares stalled one of its two workers for each
/// charge (PlaceOrder's tail), and on a blocking thread a charge could outlive the caller's
/// timeout.
#[derive(Debug)]
struct LedgerFile(File);

#[derive(Debug, Default)]
struct Ledger {
    /// Charges made, by key: (reference, amount, currency, refunded).
    charges: HashMap<String, (String, i64, String, bool)>,
    /// Attempts per key, charged or not.
    attempts: HashMap<String, u32>,
    file: Option<LedgerFile>,
}

impl Ledger {
    /// Appends `line` to the ledger file, if there is one.
    fn record(&mut self, line: &str) -> Result<(), ChargeError> {
        let Some(LedgerFile(file)) = &mut self.file else {
            return Ok(());
        };
        // One write for the line and its end: a process killed between two writes would leave
        // a line without its end, and the next one would be appended to it.
        file.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| ChargeError::Transient(format!("simulator ledger: {e}")))
    }
}

/// What the simulator has done so far, for tests and the curious.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulatorTotals {
    pub charges: usize,
    pub refunds: usize,
    pub attempts: u32,
}

impl Simulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulator that keeps its charges in `path` (created if missing) across restarts.
    pub fn keeping(path: &Path) -> std::io::Result<Self> {
        let mut ledger = Ledger::default();
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                let line = line?;
                let words: Vec<&str> = line.split(' ').collect();
                match words[..] {
                    ["charge", key, reference, amount, currency] => {
                        let amount = amount.parse().unwrap_or_default();
                        let charge = (reference.to_owned(), amount, currency.to_owned(), false);
                        ledger.charges.insert(key.to_owned(), charge);
                    }
                    ["refund", reference] => {
                        if let Some(charge) = ledger.charges.values_mut().find(|c| c.0 == reference)
                        {
                            charge.3 = true;
                        }
                    }
                    // A line cut short by a crash: its caller never heard of it either.
                    _ => tracing::warn!(%line, "unreadable simulator ledger line; skipped"),
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        ledger.file = Some(LedgerFile(file));
        Ok(Self {
            state: Mutex::new(ledger),
        })
    }

    pub fn totals(&self) -> SimulatorTotals {
        let ledger = self.state.lock().unwrap_or_else(|e| e.into_inner());
        SimulatorTotals {
            charges: ledger.charges.len(),
            refunds: ledger.charges.values().filter(|c| c.3).count(),
            attempts: ledger.attempts.values().sum(),
        }
    }

    fn attempt(&self, key: &str, amount_minor: i64, currency: &str, token: &str) -> Attempt {
        let mut ledger = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let attempts = {
            let n = ledger.attempts.entry(key.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        if let Some((reference, ..)) = ledger.charges.get(key) {
            return Attempt::Done(Ok(reference.clone()));
        }
        let approve = match token {
            "tok_visa" => true,
            "tok_flaky" if attempts > 2 => true,
            "tok_flaky" => {
                return Attempt::Done(Err(ChargeError::Transient("provider_unavailable".into())));
            }
            "tok_timeout" => return Attempt::Hang,
            "tok_declined" => {
                return Attempt::Done(Err(ChargeError::Declined("card_declined".into())));
            }
            _ => false,
        };
        if !approve {
            return Attempt::Done(Err(ChargeError::Declined("invalid_payment_method".into())));
        }
        let reference = format!("ch_sim_{}", uuid::Uuid::new_v4().simple());
        let line = format!("charge {key} {reference} {amount_minor} {currency}");
        if let Err(error) = ledger.record(&line) {
            return Attempt::Done(Err(error));
        }
        ledger.charges.insert(
            key.to_owned(),
            (reference.clone(), amount_minor, currency.to_owned(), false),
        );
        Attempt::Done(Ok(reference))
    }
}

enum Attempt {
    Done(Result<String, ChargeError>),
    Hang,
}

impl PaymentProvider for Simulator {
    fn charge<'a>(
        &'a self,
        key: &'a str,
        amount_minor: i64,
        currency: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<String, ChargeError>> {
        Box::pin(async move {
            match self.attempt(key, amount_minor, currency, token) {
                Attempt::Done(outcome) => outcome,
                Attempt::Hang => std::future::pending().await,
            }
        })
    }

    fn refund<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(), ChargeError>> {
        Box::pin(async move {
            let mut ledger = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let refunded = ledger
                .charges
                .values()
                .find(|c| c.0 == reference)
                .map(|c| c.3);
            match refunded {
                Some(true) => Ok(()),
                Some(false) => {
                    // Refunded once it is on disk: a refund that could not be written is not.
                    ledger.record(&format!("refund {reference}"))?;
                    if let Some(charge) = ledger.charges.values_mut().find(|c| c.0 == reference) {
                        charge.3 = true;
                    }
                    Ok(())
                }
                None => Err(ChargeError::Declined(format!("no charge {reference}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn charge(sim: &Simulator, key: &str, token: &str) -> Result<String, ChargeError> {
        tokio::time::timeout(
            Duration::from_millis(50),
            sim.charge(key, 100, "EUR", token),
        )
        .await
        .unwrap_or(Err(ChargeError::Transient("timed out".into())))
    }

    #[tokio::test]
    async fn each_test_card_takes_its_branch() {
        let sim = Simulator::new();
        assert!(charge(&sim, "a", "tok_visa").await.is_ok());
        assert_eq!(
            charge(&sim, "b", "tok_declined").await,
            Err(ChargeError::Declined("card_declined".into()))
        );
        assert_eq!(
            charge(&sim, "c", "tok_timeout").await,
            Err(ChargeError::Transient("timed out".into()))
        );
        assert_eq!(
            charge(&sim, "d", "tok_nonsense").await,
            Err(ChargeError::Declined("invalid_payment_method".into()))
        );
        assert_eq!(sim.totals().charges, 1);
    }

    #[tokio::test]
    async fn flaky_fails_twice_per_key_then_approves_once() {
        let sim = Simulator::new();
        for _ in 0..2 {
            let failed = charge(&sim, "k", "tok_flaky").await;
            assert_eq!(
                failed,
                Err(ChargeError::Transient("provider_unavailable".into()))
            );
        }
        let first = charge(&sim, "k", "tok_flaky").await;
        let again = charge(&sim, "k", "tok_flaky").await;
        assert!(first.is_ok());
        assert_eq!(first, again, "the same key is the same charge");
        assert_eq!(sim.totals().charges, 1);
        assert_eq!(sim.totals().attempts, 4);
    }

    #[tokio::test]
    async fn refunds_are_idempotent_and_need_a_charge() {
        let sim = Simulator::new();
        let reference = charge(&sim, "a", "tok_visa").await.unwrap_or_default();
        assert!(sim.refund(&reference).await.is_ok());
        assert!(sim.refund(&reference).await.is_ok());
        assert_eq!(sim.totals().refunds, 1);
        assert!(sim.refund("ch_unknown").await.is_err());
    }

    #[tokio::test]
    async fn with_a_ledger_file_charges_survive_a_restart() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("simulator.ledger");
        let sim = Simulator::keeping(&path)?;
        let kept = charge(&sim, "pay-1", "tok_visa").await.unwrap_or_default();
        let refunded = charge(&sim, "pay-2", "tok_visa").await.unwrap_or_default();
        assert!(sim.refund(&refunded).await.is_ok());
        drop(sim);

        let sim = Simulator::keeping(&path)?;
        assert_eq!(sim.totals().charges, 2);
        assert_eq!(sim.totals().refunds, 1);
        assert_eq!(
            charge(&sim, "pay-1", "tok_visa").await,
            Ok(kept.clone()),
            "the same key is still the same charge"
        );
        assert!(
            sim.refund(&kept).await.is_ok(),
            "a charge from before the restart refunds"
        );
        assert_eq!(Simulator::keeping(&path)?.totals().refunds, 2);
        Ok(())
    }
}
