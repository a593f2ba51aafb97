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
//!
//! Live chat (with `CONNECTIONS_TABLE`): the gateway is API Gateway's
//! WebSocket API too — `ws://…/ws` ([`websocket`]) and the management API
//! `/@connections/{id}` ([`connections_api`]) on the same port — and
//! `WS_ENDPOINT` defaults to the gateway's own address, so pushes come
//! back to it. `migrate` and every start create the connections table.
//! `GATEWAY_CONSUMER=off` runs no background consumer: nothing writes the
//! `messages` rows then (tests use it to show what does not wait for them).

mod connections_api;
mod events;
mod sockets;
mod static_files;
mod websocket;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, State},
    response::IntoResponse,
    routing::{get, post},
};
use switchboard::{
    App, Config, config::HandoffConfig, consumer::Consumer, handoff::Handoff, http::SourceIp, metrics, telemetry,
};

use crate::sockets::{Gateway, Sockets};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init();
    metrics::init()?;
    // `SECRET_IDS` works here too: `migrate` from a host in the VPC reads
    // the deployed stack's secrets.
    let mut config = Config::load().await?;
    let command = std::env::args().nth(1);
    // Seed 001 names the address `API_HOST` / `API_PORT`; `PORT` and
    // `GATEWAY_BIND` (what the scripts set) win when both are given.
    let setting = |names: [&str; 2]| names.iter().find_map(|name| std::env::var(name).ok());
    let port: u16 = setting(["PORT", "API_PORT"]).map(|p| p.parse()).transpose()?.unwrap_or(8000);
    let bind = setting(["GATEWAY_BIND", "API_HOST"]).unwrap_or_else(|| "127.0.0.1".into());
    // Bound first when serving, so the address pushes come back to is known
    // (`PORT=0` too).
    let listener = match command.as_deref() {
        Some("migrate" | "consume") => None,
        _ => Some(tokio::net::TcpListener::bind((bind.as_str(), port)).await?),
    };
    let own = match &listener {
        Some(listener) => listener.local_addr()?,
        None => SocketAddr::new(bind.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), port),
    };
    own_ws_endpoint(&mut config, own);
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
    if app.create_connections_table().await? {
        tracing::info!(table = app.config.chat.connections_table.as_deref(), "connections table created");
    }
    match command.as_deref() {
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
    if std::env::var("GATEWAY_CONSUMER").is_ok_and(|v| v == "off") {
        tracing::info!("GATEWAY_CONSUMER=off: no background consumer");
    } else {
        tokio::spawn(consume(app.clone()));
    }
    if let Some(jobs) = inline {
        tokio::spawn(switchboard::pipeline::handoff::serve_inline(app.clone(), jobs));
    }
    let Some(listener) = listener else { return Ok(()) };
    let gateway = Gateway { app, sockets: Sockets::default(), port: own.port() };
    let router = Router::new()
        .route("/ws", get(websocket::upgrade))
        .route(
            "/@connections/{id}",
            post(connections_api::post).get(connections_api::get).delete(connections_api::delete),
        )
        .fallback(serve)
        .with_state(gateway);
    tracing::info!(address = %own, "local gateway listening");
    let router = static_files::mount(router);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// With live chat on and no `WS_ENDPOINT`, pushes go to this gateway's
/// management API and clients are told its `/ws` (loopback when it binds
/// every address).
fn own_ws_endpoint(config: &mut Config, own: SocketAddr) {
    let chat = &mut config.chat;
    if chat.connections_table.is_none() || chat.endpoint.is_some() {
        return;
    }
    let mut own = own;
    if own.ip().is_unspecified() {
        own.set_ip(if own.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    chat.endpoint = Some(format!("http://{own}"));
    chat.public_url.get_or_insert_with(|| format!("ws://{own}/ws"));
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
