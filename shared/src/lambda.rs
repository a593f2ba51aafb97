//! The adapter from `lambda_http` (API Gateway HTTP and REST events) to the
//! router in [`crate::http`], so the Lambda binaries and the local gateway run
//! the same handler code (and log and count each request the same way,
//! through [`crate::http::serve`], with Lambda's request id); and
//! `process-conversation`'s handler of a hand-off (the same code the
//! gateway runs inline).

use bytes::Bytes;
use lambda_http::{Body, Error, LambdaEvent, Request, RequestExt, Response, request::RequestContext, run, service_fn};
use serde_json::{Value, json};

use crate::{App, Config, clock::now_ms, deadline, http::SourceIp, jobs::Redrive, metrics, pipeline, telemetry};

/// What every function does once per cold start: telemetry and metrics,
/// the configuration with the function's secrets (`SECRET_IDS`), the
/// clients, and one look at each store (a misconfigured one stops here).
pub async fn cold_start() -> Result<App, Error> {
    telemetry::init();
    metrics::init()?;
    let config = Config::load().await?;
    let app = App::build(config)?;
    app.check_stores().await?;
    Ok(app)
}

/// The whole `main` of an HTTP function: telemetry, configuration read once
/// (with the function's secrets, `SECRET_IDS`), clients built once, then the
/// runtime loop. Every HTTP function serves the
/// same router; API Gateway decides which routes reach which function.
pub async fn run_http() -> Result<(), Error> {
    let app = cold_start().await?;
    app.handoff.prepare().await;
    app.live.prepare().await;
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
    let request_id = request.lambda_context_ref().map(|context| context.request_id.clone()).unwrap_or_default();
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
    let request = http::Request::from_parts(parts, body);
    let response = deadline::within(deadline, crate::http::serve(app, request, &request_id)).await;
    let (parts, body) = response.into_parts();
    let body = match String::from_utf8(body.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Ok(Response::from_parts(parts, body))
}

/// The whole `main` of `process-conversation`: one handed-off conversation
/// per asynchronous invocation.
pub async fn run_process() -> Result<(), Error> {
    let app = cold_start().await?;
    let app = &app;
    lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        observed(&request_id, process(app, event)).await
    }))
    .await
}

/// Answers the conversation a hand-off names, within the invocation's
/// deadline. A passing failure (a store away) fails the invocation: Lambda
/// retries it twice, then sends it to the function's on-failure
/// destination; the `jobs` stream's safety-net entry answers the
/// conversation meanwhile. An event that can never succeed (not a hand-off,
/// an invalid conversation id) is logged and answered `invalid`: a retry
/// would fail the same way.
pub async fn process(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let deadline = deadline::from_epoch_ms(event.context.deadline, now_ms());
    let job: Redrive = match serde_json::from_value(event.payload) {
        Ok(job) => job,
        Err(err) => {
            tracing::warn!(error = %err, "not a hand-off event; ignored");
            return Ok(json!({ "result": "invalid", "error": "not a hand-off event" }));
        }
    };
    // Boxed: the answering future is too deep to lay out inline in the runtime's.
    match deadline::within(deadline, Box::pin(pipeline::handoff::answer(app, &job))).await {
        Ok(result) => Ok(json!({ "conversation_id": job.conversation_id, "result": result })),
        Err(crate::AppError::InvalidField { .. }) => {
            tracing::warn!(conversation_id = %job.conversation_id, "hand-off with an invalid conversation id; ignored");
            Ok(json!({ "conversation_id": job.conversation_id, "result": "invalid" }))
        }
        Err(err) => {
            tracing::warn!(conversation_id = %job.conversation_id, error = %err, "hand-off not answered");
            Err(Error::from(format!("conversation {} not answered: {err}", job.conversation_id)))
        }
    }
}

/// The whole `main` of a WebSocket function (`ws-connect`,
/// `ws-disconnect`, `ws-message`): API Gateway WebSocket events of one
/// route, handled by [`crate::ws`].
pub async fn run_ws(route: crate::ws::Route) -> Result<(), Error> {
    let app = cold_start().await?;
    app.live.prepare().await;
    let app = &app;
    lambda_http::lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest>| async move {
            let deadline = deadline::from_epoch_ms(event.context.deadline, now_ms());
            let response = deadline::within(deadline, crate::ws::handle(app, route, event.payload)).await;
            Ok::<_, Error>(response)
        },
    ))
    .await
}

/// Runs one non-HTTP invocation (the consumer's) inside a metrics scope and
/// prints its EMF documents once at the end, tagged with Lambda's request id.
pub async fn observed<F: std::future::Future>(request_id: &str, invocation: F) -> F::Output {
    let (output, observed) = metrics::scope(invocation).await;
    observed.emit(Some(request_id));
    output
}
