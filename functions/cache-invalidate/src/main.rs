//! Lambda `cache-invalidate`: seed 004's `/api/cache/*` endpoints.
//! Wiring only: [`switchboard::lambda::run_http`] reads the configuration,
//! builds the clients once and runs the shared router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    switchboard::lambda::run_http().await
}
