//! The `worker` binary: parse settings, start telemetry, run until SIGTERM.

use clap::Parser;
use fleet_worker::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = fleet_common::telemetry::init(
        "fleet-worker",
        &config.telemetry.otlp,
        config.telemetry.log_format,
        "info",
    )?;
    fleet_worker::run(config, fleet_common::shutdown::signal()).await?;
    Ok(())
}
