//! Lambda `background-consumer`: invoked by an EventBridge schedule, drains
//! the `jobs` stream into Postgres until shortly before its deadline and
//! returns a summary. Wiring only: telemetry, configuration (with its
//! secrets, `SECRET_IDS`), clients built once, runtime.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use switchboard::{
    consumer::Consumer,
    lambda::{cold_start, observed},
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = cold_start().await?;
    let consumer = Consumer::connect(app, Consumer::instance_name("lambda")).await?;
    let consumer = &consumer;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // One set of EMF documents per invocation (queue lag, dead letters, AI latency).
        let summary = observed(&event.context.request_id, consumer.drain(event.context.deadline)).await;
        Ok::<Value, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
