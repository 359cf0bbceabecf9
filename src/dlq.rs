//! `shop events dlq list|replay`: look at what a consumer gave up on, and send it back.

use shop_common::events::{BusError, EventBus, RabbitBus};

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    /// RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: String,

    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List a consumer's dead letters: event id, type, attempts and the last failure.
    List {
        /// The consuming service, e.g. payment-service (its queue is named after it).
        #[arg(long)]
        consumer: String,
    },
    /// Put one dead letter back on the consumer's queue with a fresh attempt count.
    Replay {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        event_id: String,
    },
}

/// Runs the command and returns what to print.
pub async fn run(args: &DlqArgs) -> Result<String, BusError> {
    let bus = RabbitBus::connect(&args.amqp_url).await?;
    match &args.command {
        DlqCommand::List { consumer } => {
            let letters = bus.dead_letters(consumer).await?;
            if letters.is_empty() {
                return Ok(format!("no dead letters for {consumer}"));
            }
            let mut out = format!(
                "{:<36}  {:<24}  {:>8}  reason\n",
                "event id", "type", "attempts"
            );
            for letter in letters {
                out.push_str(&format!(
                    "{:<36}  {:<24}  {:>8}  {}\n",
                    letter.envelope.id(),
                    letter.envelope.event_type(),
                    letter.attempts,
                    letter.reason
                ));
            }
            Ok(out.trim_end().to_owned())
        }
        DlqCommand::Replay { consumer, event_id } => {
            bus.replay(consumer, event_id).await?;
            Ok(format!("replayed {event_id} to {consumer}"))
        }
    }
}
