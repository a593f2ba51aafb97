//! Lambda `admin-control`: conversation cancel/resume, system cleanup,
//! `GET/PUT/DELETE /api/v1/admin/assistants/{id}` and dead-letter replay
//! (`POST /api/v1/admin/dead-letters/{id}/replay`).
//! Wiring only: [`switchboard::lambda::run_http`] reads the configuration,
//! builds the clients once and runs the shared router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    switchboard::lambda::run_http().await
}
