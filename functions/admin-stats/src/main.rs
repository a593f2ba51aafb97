//! Lambda `admin-stats`: `GET /api/v1/admin/stats`, `GET /api/v1/admin/conversations`,
//! `GET /api/v1/admin/dead-letters` and `GET /api/v1/admin/actions`.
//! Wiring only: [`switchboard::lambda::run_http`] reads the configuration,
//! builds the clients once and runs the shared router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    switchboard::lambda::run_http().await
}
