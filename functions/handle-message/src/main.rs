//! Lambda `handle-message`: `POST /api/v1/enhanced-handle-message`.
//! Wiring only: telemetry, configuration, clients built once, runtime.

use lambda_http::{Error, Request, run, service_fn};
use switchboard::{App, Config, lambda, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let app = App::build(config)?;
    let app = &app;
    run(service_fn(move |request: Request| async move { lambda::handle(app, request).await })).await
}
