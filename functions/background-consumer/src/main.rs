//! Lambda `background-consumer`: invoked by an EventBridge schedule, drains
//! the `jobs` stream into Postgres until shortly before its deadline and
//! returns a summary. Wiring only: telemetry, configuration (with its
//! secrets, `SECRET_IDS`), clients built once, runtime.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use switchboard::{App, Config, consumer::Consumer, lambda::observed, metrics, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    metrics::init()?;
    let config = Config::load().await?;
    let app = App::build(config)?;
    app.check_stores().await?;
    let consumer = Consumer::connect(app, Consumer::instance_name("lambda")).await?;
    let consumer = &consumer;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // One set of EMF documents per invocation (queue lag, dead letters, AI latency).
        let summary = observed(&event.context.request_id, consumer.drain(event.context.deadline)).await;
        Ok::<Value, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
