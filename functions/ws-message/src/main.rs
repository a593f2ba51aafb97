//! Lambda `ws-message`: the WebSocket API's `$default` and named routes (`sendMessage`, `subscribe`, …). Wiring only:
//! [`switchboard::lambda::run_ws`] reads the configuration, builds the
//! clients once and runs [`switchboard::ws`]'s handler for this route.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    switchboard::lambda::run_ws(switchboard::ws::Route::Message).await
}
