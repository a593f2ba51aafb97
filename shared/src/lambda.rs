//! The adapter from `lambda_http` (API Gateway HTTP and REST events) to the
//! router in [`crate::http`], so the Lambda binaries and the local gateway run
//! the same handler code.

use bytes::Bytes;
use lambda_http::{Body, Error, Request, RequestExt, Response, request::RequestContext, run, service_fn};

use crate::{App, Config, clock::now_ms, deadline, http::SourceIp, telemetry};

/// The whole `main` of an HTTP function: telemetry, configuration read once,
/// clients built once, then the runtime loop. Every HTTP function serves the
/// same router; API Gateway decides which routes reach which function.
pub async fn run_http() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let app = App::build(config)?;
    app.check_stores().await?;
    let app = &app;
    run(service_fn(move |request: Request| async move { handle(app, request).await })).await
}

/// The caller's address from the event's request context.
fn source_ip(request: &Request) -> Option<String> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.clone(),
        RequestContext::ApiGatewayV1(context) => context.identity.source_ip.clone(),
        _ => None,
    }
}

/// Handles one API Gateway event.
pub async fn handle(app: &App, request: Request) -> Result<Response<Body>, Error> {
    let source = source_ip(&request);
    let deadline = request.lambda_context_ref().and_then(|context| deadline::from_epoch_ms(context.deadline, now_ms()));
    let (mut parts, body) = request.into_parts();
    if let Some(ip) = source {
        parts.extensions.insert(SourceIp(ip));
    }
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    let response = deadline::within(deadline, crate::http::route(app, http::Request::from_parts(parts, body))).await;
    let (parts, body) = response.into_parts();
    let body = match String::from_utf8(body.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Ok(Response::from_parts(parts, body))
}
