//! The local gateway: serves every HTTP route of every function on
//! `127.0.0.1:$PORT` (default 8000) by calling the same router the Lambda
//! binaries call ([`switchboard::http::route`]), after applying migrations,
//! and runs the background consumer of the `jobs` stream continuously (what
//! the scheduled `background-consumer` Lambda does in the cloud).
//!
//! Wiring only, like a function's `main.rs`; it binds loopback unless
//! `GATEWAY_BIND` (or seed 001's `API_HOST`) says otherwise; the port is
//! `PORT` (or `API_PORT`). `local-gateway migrate` applies the
//! migrations and exits (scripts and deploy steps use it); `local-gateway
//! consume` runs only the consumer, as a process of its own. Webhook
//! messages are handed to tasks of the gateway itself (`HANDOFF=inline`,
//! the default here), as `handle-message` hands them to the
//! `process-conversation` Lambda in the cloud.

mod static_files;

use std::net::SocketAddr;

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, State},
    response::IntoResponse,
};
use switchboard::{
    App, Config, config::HandoffConfig, consumer::Consumer, handoff::Handoff, http::SourceIp, metrics, telemetry,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init();
    metrics::init()?;
    // `SECRET_IDS` works here too: `migrate` from a host in the VPC reads
    // the deployed stack's secrets.
    let mut config = Config::load().await?;
    // Seed 001 names the address `API_HOST` / `API_PORT`; `PORT` and
    // `GATEWAY_BIND` (what the scripts set) win when both are given.
    let setting = |names: [&str; 2]| names.iter().find_map(|name| std::env::var(name).ok());
    let port: u16 = setting(["PORT", "API_PORT"]).map(|p| p.parse()).transpose()?.unwrap_or(8000);
    let bind = setting(["GATEWAY_BIND", "API_HOST"]).unwrap_or_else(|| "127.0.0.1".into());
    // The gateway hands webhook messages to its own tasks (what the
    // `process-conversation` Lambda does in the cloud) unless `HANDOFF`
    // says otherwise.
    if std::env::var_os("HANDOFF").is_none() {
        config.handoff = HandoffConfig::Inline;
    }
    let mut app = App::build(config)?;
    let inline = if app.config.handoff == HandoffConfig::Inline {
        let (handoff, jobs) = Handoff::inline();
        app.handoff = handoff;
        Some(jobs)
    } else {
        None
    };
    app.check_stores().await?;
    app.migrate().await?;
    match std::env::args().nth(1).as_deref() {
        Some("migrate") => {
            tracing::info!("migrations applied");
            return Ok(());
        }
        // The consumer alone, as its own process (the fault suite kills it).
        Some("consume") => {
            consume(app).await;
            return Ok(());
        }
        _ => {}
    }
    tokio::spawn(consume(app.clone()));
    if let Some(jobs) = inline {
        tokio::spawn(switchboard::pipeline::handoff::serve_inline(app.clone(), jobs));
    }
    let router = Router::new().fallback(serve).with_state(app);
    let listener = tokio::net::TcpListener::bind((bind.as_str(), port)).await?;
    tracing::info!(address = %listener.local_addr()?, "local gateway listening");
    let router = static_files::mount(router);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// Every request goes to the shared router, exactly as a Lambda event would.
async fn serve(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: http::Request<axum::body::Body>,
) -> impl IntoResponse {
    let (mut parts, body) = request.into_parts();
    // What API Gateway reports as `sourceIp` for a Lambda event.
    parts.extensions.insert(SourceIp(peer.ip().to_string()));
    let limit = switchboard::http::MAX_BODY_BYTES + 1;
    // Read one byte past the limit so the router answers 413 itself.
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => Bytes::from(vec![0u8; limit]),
    };
    // No Lambda request id here: one made up, so local lines correlate too.
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = switchboard::http::serve(&app, http::Request::from_parts(parts, body), &request_id).await;
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, axum::body::Body::from(body))
}

/// The continuous consumer: what the scheduled `background-consumer` Lambda
/// does in the cloud. Reconnects with backoff while Redis is away.
async fn consume(app: App) {
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match Consumer::connect(app.clone(), Consumer::instance_name("gateway")).await {
            Ok(consumer) => {
                tracing::info!(consumer = consumer.name(), "background consumer running");
                consumer.run(std::future::pending()).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "background consumer cannot start yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
