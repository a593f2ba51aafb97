//! Lambda `admin-health`: `GET /api/v1/admin/health` and `GET /openapi.json`.
//! Wiring only: [`switchboard::lambda::run_http`] reads the configuration,
//! builds the clients once and runs the shared router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    switchboard::lambda::run_http().await
}
