//! Who creates the fleet's streams, buckets and consumers: every process at start, or only the
//! admin's `fleet setup`.
//!
//! Creating and updating streams needs JetStream's admin API (`$JS.API.STREAM.CREATE.…`,
//! `$JS.API.CONSUMER.DURABLE.CREATE.…`). With `FLEET_MANAGE_STREAMS=false` a dispatcher or
//! worker never asks for it: it looks the streams, buckets and its durable consumers up and
//! fails at start, naming `fleet setup`, when one is missing. So its NATS user needs no
//! stream-admin rights (see `deploy/nats/`).

use clap::{Args, builder::BoolishValueParser};

/// Whether a dispatcher or worker manages the fleet's streams itself.
#[derive(Debug, Clone, Args)]
pub struct ManageArgs {
    /// Create or update the streams, buckets and this process's consumers at start (true, the
    /// default), or only use the ones `fleet setup` made (false: for a NATS user without
    /// stream-admin rights).
    #[arg(
        long,
        env = "FLEET_MANAGE_STREAMS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub manage_streams: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        manage: ManageArgs,
    }

    #[test]
    fn managing_is_the_default_and_can_be_turned_off() {
        if std::env::var_os("FLEET_MANAGE_STREAMS").is_none() {
            let cli = Cli::try_parse_from(["t"]).expect("no flags");
            assert!(cli.manage.manage_streams);
        }
        for (text, want) in [
            ("false", false),
            ("0", false),
            ("no", false),
            ("true", true),
        ] {
            let cli = Cli::try_parse_from(["t", "--manage-streams", text]).expect("a boolean");
            assert_eq!(cli.manage.manage_streams, want, "{text}");
        }
        assert!(Cli::try_parse_from(["t", "--manage-streams", "maybe"]).is_err());
    }
}
