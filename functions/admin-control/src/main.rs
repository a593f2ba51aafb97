//! Lambda `admin-control`: conversation cancel/resume, system cleanup and
//! `GET/PUT/DELETE /api/v1/admin/assistants/{id}`.
//! Wiring only: [`switchboard::lambda::run_http`] reads the configuration,
//! builds the clients once and runs the shared router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    switchboard::lambda::run_http().await
}
