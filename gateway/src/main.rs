//! The local gateway: serves every HTTP route of every function on
//! `127.0.0.1:$PORT` (default 8000) by calling the same router the Lambda
//! binaries call ([`switchboard::http::route`]), after applying migrations.
//!
//! Wiring only, like a function's `main.rs`; it binds loopback unless
//! `GATEWAY_BIND` says otherwise. `local-gateway migrate` applies the
//! migrations and exits (scripts and deploy steps use it).

use axum::{Router, body::Bytes, extract::State, response::IntoResponse};
use switchboard::{App, Config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init();
    let config = Config::from_env()?;
    let port: u16 = std::env::var("PORT").ok().map(|p| p.parse()).transpose()?.unwrap_or(8000);
    let bind = std::env::var("GATEWAY_BIND").unwrap_or_else(|_| "127.0.0.1".into());
    let app = App::build(config)?;
    app.migrate().await?;
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        tracing::info!("migrations applied");
        return Ok(());
    }
    let router = Router::new().fallback(serve).with_state(app);
    let listener = tokio::net::TcpListener::bind((bind.as_str(), port)).await?;
    tracing::info!(address = %listener.local_addr()?, "local gateway listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

/// Every request goes to the shared router, exactly as a Lambda event would.
async fn serve(State(app): State<App>, request: http::Request<axum::body::Body>) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let limit = switchboard::http::MAX_BODY_BYTES + 1;
    // Read one byte past the limit so the router answers 413 itself.
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => Bytes::from(vec![0u8; limit]),
    };
    let response = switchboard::http::route(&app, http::Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, axum::body::Body::from(body))
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
