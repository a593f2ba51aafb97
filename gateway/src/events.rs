//! The events API Gateway's WebSocket API sends its integrations, built the
//! way API Gateway builds them, so `switchboard::ws::handle` cannot tell the
//! local gateway from AWS: a `$connect` event carries the upgrade request's
//! headers and query string, a `MESSAGE` event the frame's text as `body`
//! and the route that `$request.body.action` selected, a `DISCONNECT` event
//! the close code and reason. They are written as JSON first, with the
//! field names and formats of the events API Gateway sends (and of
//! `events/ws-*.json`), then read into `aws_lambda_events`' type, exactly
//! as the Lambda runtime reads them.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine;
use http::HeaderMap;
use serde_json::{Map, Value, json};

/// The routes of the WebSocket API besides `$connect`, `$disconnect` and
/// `$default` (template.yaml's route keys; frames naming another action,
/// or none, go to `$default`).
pub const ROUTE_KEYS: [&str; 6] = ["sendMessage", "subscribe", "unsubscribe", "resumeBot", "typing", "ping"];

/// What the stage, API and domain are called here (`/ws` on loopback).
const STAGE: &str = "local";
const API_ID: &str = "local";
const DOMAIN: &str = "127.0.0.1";

/// Who is connected: `requestContext.identity`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub source_ip: String,
    pub user_agent: Option<String>,
}

/// What every event of one connection shares.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    /// Epoch milliseconds, as `requestContext.connectedAt`.
    pub connected_at: i64,
    pub identity: Identity,
    /// The upgrade request's headers, as `$connect` carries them.
    pub headers: Map<String, Value>,
}

/// An id like API Gateway's connection and request ids: 11 random bytes in
/// base64 with its padding (16 characters ending in `=`, e.g.
/// `L0SM9cOFvHcCIhw=`). The URL-safe alphabet: an id is a path segment of
/// the management API, and `/` in one would help nobody.
pub fn new_id() -> String {
    // A v4 UUID's bytes 0-5 and 9-13 are all random (6 and 8 carry its
    // version and variant bits).
    let uuid = uuid::Uuid::new_v4();
    let bytes = uuid.as_bytes();
    let mut random = [0u8; 11];
    random[..6].copy_from_slice(&bytes[..6]);
    random[6..].copy_from_slice(&bytes[9..14]);
    base64::engine::general_purpose::URL_SAFE.encode(random)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `requestContext.requestTime`: `09/Feb/2024:18:23:28 +0000`.
fn request_time(ms: i64) -> String {
    let format = time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// An ISO 8601 time, as the management API's `GetConnection` answers it.
pub fn iso8601(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The upgrade request's headers as API Gateway passes them on, with the
/// `X-Forwarded-*` it adds.
pub fn headers(headers: &HeaderMap, source_ip: &str, port: u16) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            map.insert(name.as_str().to_owned(), json!(value));
        }
    }
    map.insert("X-Forwarded-For".into(), json!(source_ip));
    map.insert("X-Forwarded-Port".into(), json!(port.to_string()));
    map.insert("X-Forwarded-Proto".into(), json!("http"));
    map
}

fn multi_value(single: &Map<String, Value>) -> Value {
    Value::Object(single.iter().map(|(k, v)| (k.clone(), json!([v]))).collect())
}

/// The query string as `queryStringParameters` (the last value of a name)
/// and `multiValueQueryStringParameters`, percent-decoded.
fn query(raw: &str) -> (Map<String, Value>, Map<String, Value>) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (name, value) = (decode(name), decode(value));
        single.insert(name.clone(), json!(value));
        match multi.get_mut(&name) {
            Some(Value::Array(values)) => values.push(json!(value)),
            _ => {
                multi.insert(name, json!([value]));
            }
        }
    }
    (single, multi)
}

fn context(connection: &Connection, route_key: &str, event_type: &str, now: i64) -> Map<String, Value> {
    let request_id = new_id();
    let mut identity = json!({"sourceIp": connection.identity.source_ip});
    if let Some(agent) = &connection.identity.user_agent {
        identity["userAgent"] = json!(agent);
    }
    let context = json!({
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": request_time(now),
        "messageDirection": "IN",
        "stage": STAGE,
        "connectedAt": connection.connected_at,
        "requestTimeEpoch": now,
        "identity": identity,
        "requestId": request_id,
        "domainName": DOMAIN,
        "connectionId": connection.id,
        "apiId": API_ID,
    });
    match context {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn read(event: Value) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(event).unwrap_or_else(|error| {
        // Only a bug here can get this far: the JSON above is ours.
        tracing::error!(%error, "a WebSocket event could not be read as aws_lambda_events reads it");
        ApiGatewayWebsocketProxyRequest::default()
    })
}

/// `$connect`, with the upgrade request's query string (the `token`).
pub fn connect(connection: &Connection, raw_query: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
    let mut event = json!({
        "headers": connection.headers,
        "multiValueHeaders": multi_value(&connection.headers),
        "requestContext": context(connection, "$connect", "CONNECT", now_ms()),
        "isBase64Encoded": false,
    });
    // API Gateway leaves the query fields out when there is no query string.
    if let Some(raw) = raw_query.filter(|q| !q.is_empty()) {
        let (single, multi) = query(raw);
        event["queryStringParameters"] = Value::Object(single);
        event["multiValueQueryStringParameters"] = Value::Object(multi);
    }
    read(event)
}

/// The route `$request.body.action` selects for a frame: its `action` when
/// the frame is a JSON object naming a configured route, else `$default`.
pub fn route_key(body: &str) -> &'static str {
    let action = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("action")?.as_str().map(str::to_owned));
    action.and_then(|a| ROUTE_KEYS.into_iter().find(|k| *k == a)).unwrap_or("$default")
}

/// One text frame (`MESSAGE`): no headers, the frame as `body`.
pub fn message(connection: &Connection, body: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut context = context(connection, route_key(body), "MESSAGE", now_ms());
    context.insert("messageId".into(), json!(new_id()));
    read(json!({"requestContext": context, "body": body, "isBase64Encoded": false}))
}

/// `$disconnect`, with the close code and reason (the client's, or the
/// gateway's when it closed the connection). API Gateway sends it with
/// these few headers, not the upgrade request's.
pub fn disconnect(connection: &Connection, code: u16, reason: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut context = context(connection, "$disconnect", "DISCONNECT", now_ms());
    context.insert("disconnectStatusCode".into(), json!(code));
    context.insert("disconnectReason".into(), json!(reason));
    let host = connection.headers.get("host").cloned().unwrap_or_else(|| json!(DOMAIN));
    let headers = json!({"Host": host, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""});
    let headers = match headers {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    read(json!({
        "headers": headers,
        "multiValueHeaders": multi_value(&headers),
        "requestContext": context,
        "isBase64Encoded": false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        Connection {
            id: new_id(),
            connected_at: 1_707_503_007_396,
            identity: Identity { source_ip: "127.0.0.1".into(), user_agent: Some("wscat".into()) },
            headers: headers(&HeaderMap::new(), "127.0.0.1", 8000),
        }
    }

    #[test]
    fn ids_look_like_api_gateways() {
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(id.ends_with('='));
        assert!(!id.contains('/') && !id.contains('+'));
        assert_ne!(id, new_id());
    }

    #[test]
    fn route_selection_is_the_bodys_action_when_it_is_a_route() {
        assert_eq!(route_key(r#"{"action":"ping"}"#), "ping");
        assert_eq!(route_key(r#"{"action":"sendMessage","message":"hi"}"#), "sendMessage");
        assert_eq!(route_key(r#"{"action":"dance"}"#), "$default");
        assert_eq!(route_key(r#"{"action":1}"#), "$default");
        assert_eq!(route_key("not json"), "$default");
    }

    #[test]
    fn events_read_as_the_lambda_runtime_reads_them() {
        let connection = connection();
        let connect = super::connect(&connection, Some("token=a%2Bb%3D&x=1&x=2"));
        assert_eq!(connect.query_string_parameters.first("token"), Some("a+b="));
        assert_eq!(connect.multi_value_query_string_parameters.all("x"), Some(vec!["1", "2"]));
        let context = &connect.request_context;
        assert_eq!(context.route_key.as_deref(), Some("$connect"));
        assert_eq!(context.event_type.as_deref(), Some("CONNECT"));
        assert_eq!(context.connection_id.as_deref(), Some(connection.id.as_str()));
        assert_eq!(context.connected_at, 1_707_503_007_396);
        assert_eq!(context.identity.source_ip.as_deref(), Some("127.0.0.1"));
        assert!(connect.headers.contains_key("x-forwarded-for"));
        assert!(super::connect(&connection, None).query_string_parameters.is_empty());

        let message = super::message(&connection, r#"{"action":"ping"}"#);
        assert_eq!(message.request_context.route_key.as_deref(), Some("ping"));
        assert_eq!(message.request_context.event_type.as_deref(), Some("MESSAGE"));
        assert_eq!(message.body.as_deref(), Some(r#"{"action":"ping"}"#));
        assert!(message.request_context.message_id.is_some());

        let gone = disconnect(&connection, 1005, "Client-side close frame status not set");
        assert_eq!(gone.request_context.disconnect_status_code, Some(1005));
        assert_eq!(gone.request_context.event_type.as_deref(), Some("DISCONNECT"));
        assert!(gone.headers.contains_key("host") && gone.body.is_none());
    }

    #[test]
    fn times_are_formatted_as_api_gateway_formats_them() {
        assert_eq!(request_time(1_707_503_008_941), "09/Feb/2024:18:23:28 +0000");
        assert_eq!(iso8601(1_707_503_008_941), "2024-02-09T18:23:28.941Z");
    }
}
