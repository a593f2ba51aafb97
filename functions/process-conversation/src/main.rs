//! Lambda `process-conversation`: answers one conversation per
//! asynchronous invocation, handed off by `handle-message` as soon as a
//! webhook message is acknowledged (the `jobs` stream's entry is the safety
//! net). Wiring only: [`switchboard::lambda::run_process`] reads the
//! configuration, builds the clients once and runs the handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    switchboard::lambda::run_process().await
}
