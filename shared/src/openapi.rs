//! The OpenAPI 3.1 document of the whole HTTP API, built from the same route
//! table the router dispatches on ([`ROUTES`]) and served at
//! `GET /openapi.json`. A test fails when a route is missing from it, and
//! `scripts/test` runs schemathesis against it.

use serde_json::{Value, json};

/// Every HTTP route this crate serves, as `(method, path)`; `{id}` marks a
/// path parameter. README lists the same. The router (`crate::http`) matches
/// paths by hand; tests check that every route here is served by it and
/// described in the document.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/enhanced-handle-message"),
    ("POST", "/api/v1/pancake/webhook"),
    ("GET", "/api/v1/admin/health"),
    ("GET", "/api/v1/admin/stats"),
    ("GET", "/api/v1/admin/conversations"),
    ("POST", "/api/v1/admin/conversations/{id}/cancel"),
    ("POST", "/api/v1/admin/conversations/{id}/resume"),
    ("POST", "/api/v1/admin/system/cleanup"),
    ("POST", "/admin/system/cleanup"),
    ("GET", "/api/v1/admin/assistants/{id}"),
    ("PUT", "/api/v1/admin/assistants/{id}"),
    ("DELETE", "/api/v1/admin/assistants/{id}"),
    ("GET", "/api/v1/admin/dead-letters"),
    ("POST", "/api/v1/admin/dead-letters/{id}/replay"),
    ("GET", "/api/v1/admin/actions"),
    ("POST", "/api/v1/admin/pages/{page_id}/reconcile"),
    ("GET", "/api/cache/health"),
    ("GET", "/api/cache/metrics"),
    ("POST", "/api/cache/metrics"),
    ("POST", "/api/cache/invalidate"),
    ("POST", "/api/cache/warmup"),
    ("POST", "/api/v1/chat/sessions"),
    ("GET", "/api/v1/chat/conversations"),
    ("GET", "/api/v1/chat/conversations/{id}/messages"),
    ("GET", "/openapi.json"),
];

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}})
}

/// Request body, security and summary of one route.
fn operation(method: &str, path: &str) -> Value {
    let admin = path.starts_with("/api/v1/admin") || path.starts_with("/admin/") || path.starts_with("/api/cache");
    let mut op = json!({
        "operationId": format!("{}{}", method.to_lowercase(), path.replace(['/', '{', '}', '-'], "_")),
        "responses": {
            "200": ok("success"),
            "400": error_response("invalid input: the error names the field"),
            "401": error_response("missing or wrong token"),
            "413": error_response("body or field too large"),
            "503": error_response("a required dependency is unreachable"),
        },
    });
    if admin {
        op["security"] = json!([{"adminToken": []}]);
    }
    let (summary, body, extra): (&str, Option<Value>, Vec<Value>) = match (method, path) {
        ("POST", "/api/v1/enhanced-handle-message") => {
            op["security"] = json!([{"pancakeToken": []}]);
            op["responses"]["202"] =
                ok("rate limited: stored and owed, answered once the window allows; do not resend");
            ("Handle one message (seed 001)", Some(json!({"$ref": "#/components/schemas/MessageRequest"})), vec![])
        }
        ("POST", "/api/v1/pancake/webhook") => (
            "Pancake's webhook (messaging, conversation; others acknowledged)",
            Some(
                json!({"type": "object", "required": ["event_type"], "properties": {"event_type": {"type": "string"}, "page_id": {"type": "string"}, "data": {"type": "object"}}}),
            ),
            vec![json!({"name": "token", "in": "query", "required": true, "schema": {"type": "string"}})],
        ),
        ("GET", "/api/v1/admin/health") => ("Health of Redis, Postgres, the AI and the queue", None, vec![]),
        ("GET", "/api/v1/admin/stats") => ("System statistics (seed 001)", None, vec![]),
        ("GET", "/api/v1/admin/conversations") => (
            "Conversations, newest first, cursor-paginated",
            None,
            vec![
                json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}),
                json!({"name": "status", "in": "query", "schema": {"type": "string", "enum": ["active", "ended", "paused", "unanswered"]}}),
                json!({"name": "cursor", "in": "query", "schema": {"type": "string"}}),
            ],
        ),
        ("POST", "/api/v1/admin/system/cleanup" | "/admin/system/cleanup") => (
            "Drop old conversation state from Redis (also at seed 001's `/admin/system/cleanup`)",
            None,
            vec![
                json!({"name": "max_age_hours", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 8760}}),
            ],
        ),
        ("PUT", "/api/v1/admin/assistants/{id}") => {
            op["responses"]["201"] = ok("created");
            ("Create or replace an assistant", Some(json!({"$ref": "#/components/schemas/Assistant"})), vec![])
        }
        ("DELETE", "/api/v1/admin/assistants/{id}") => {
            op["responses"]["404"] = error_response("no such assistant");
            op["responses"]["409"] = error_response("the default assistant cannot be deleted");
            ("Delete an assistant", None, vec![])
        }
        ("GET", "/api/v1/admin/assistants/{id}") => {
            op["responses"]["404"] = error_response("no such assistant");
            ("Read an assistant", None, vec![])
        }
        ("POST", "/api/v1/admin/conversations/{id}/cancel") => {
            ("Force-release a conversation and answer what is owed", None, vec![])
        }
        ("POST", "/api/v1/admin/conversations/{id}/resume") => ("Turn the bot back on", None, vec![]),
        ("GET", "/api/v1/admin/dead-letters") => (
            "Dead letters recorded in Postgres, newest first, paged by id",
            None,
            vec![
                json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}),
                json!({"name": "before", "in": "query", "description": "the previous page's next_before: only letters with a smaller id",
                       "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX}}),
            ],
        ),
        ("POST", "/api/v1/admin/dead-letters/{id}/replay") => {
            op["responses"]["404"] = error_response("no such dead letter");
            op["responses"]["409"] = error_response(
                "already replayed, or not replayable (unknown job type, missing or unparseable payload)",
            );
            ("Re-enqueue a dead letter's job onto its conversation's jobs stream", None, vec![])
        }
        ("GET", "/api/v1/admin/actions") => (
            "Actions by status (unknown outcome, failed, pending, retrying), most recently changed first",
            None,
            vec![
                json!({"name": "status", "in": "query", "required": true,
                       "schema": {"type": "string", "enum": crate::admin::actions::LISTED_STATUSES}}),
                json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}),
                json!({"name": "before", "in": "query", "description": "the previous page's next_before (opaque)",
                       "schema": {"type": "string", "pattern": "^[0-9]{1,18}_[0-9a-fA-F-]{32,36}$"}}),
            ],
        ),
        ("POST", "/api/v1/admin/pages/{page_id}/reconcile") => {
            op["responses"]["409"] = error_response("Pancake's page API or this page's token is not configured");
            op["responses"]["502"] = error_response("Pancake refused the request or answered unreadably");
            let seconds = |description: &str| json!({"type": "integer", "minimum": 0, "maximum": 1_000_000_000_000_i64, "description": description});
            (
                "Admit what Pancake's webhook missed for a page in a window; answer only recent customer messages",
                Some(json!({"type": "object", "properties": {
                    "since": seconds("unix seconds; default until - 24 h"),
                    "until": seconds("unix seconds; default now")}})),
                vec![
                    json!({"name": "page_id", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 256}}),
                    json!({"name": "since", "in": "query", "schema": seconds("unix seconds; default until - 24 h (at most 30 days before until)")}),
                    json!({"name": "until", "in": "query", "schema": seconds("unix seconds; default now")}),
                ],
            )
        }
        ("GET", "/api/cache/health") => ("Cache health", None, vec![]),
        ("GET", "/api/cache/metrics") => ("Cache hit rates and latency", None, vec![]),
        ("POST", "/api/cache/metrics") => (
            "Warm-up, seed 004's form",
            Some(
                json!({"type": "object", "required": ["action", "assistantIds"], "properties": {"action": {"const": "warmup"}, "assistantIds": {"$ref": "#/components/schemas/AssistantIds"}}}),
            ),
            vec![],
        ),
        ("POST", "/api/cache/invalidate") => (
            "Invalidate an assistant, a thread, an integration or everything",
            Some(
                json!({"type": "object", "required": ["type"], "properties": {"type": {"enum": ["assistant", "thread", "integration", "all"]}, "assistantId": {"type": "string"}, "threadId": {"type": "string"}, "integration": {"type": "string"}}}),
            ),
            vec![],
        ),
        ("POST", "/api/cache/warmup") => (
            "Load assistants into the cache",
            Some(
                json!({"type": "object", "required": ["assistantIds"], "properties": {"assistantIds": {"$ref": "#/components/schemas/AssistantIds"}}}),
            ),
            vec![],
        ),
        ("POST", "/api/v1/chat/sessions") => {
            op["security"] = json!([{"adminToken": []}, {"widgetKey": []}]);
            op["responses"]["201"] = ok("a customer token for one conversation, and the WebSocket URL");
            op["responses"]["403"] = error_response("the token given does not open that conversation");
            op["responses"]["429"] = error_response("too many sessions from this address; see Retry-After");
            (
                "Open (or resume) a live-chat session: a customer token for one conversation",
                Some(json!({"type": "object", "properties": {
                    "conversation_id": {"type": "string", "minLength": 1, "maxLength": 256},
                    "customer_id": {"type": "string", "minLength": 1, "maxLength": 256},
                    "token": {"type": "string", "description": "a previous token of the conversation (resuming with the widget key)"}}})),
                vec![],
            )
        }
        ("GET", "/api/v1/chat/conversations") => {
            op["security"] = json!([{"chatToken": []}]);
            op["responses"]["403"] = error_response("a customer's token (agents and the admin only)");
            (
                "Conversations for the agent console, newest first (the admin listing, for agent tokens)",
                None,
                vec![
                    json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}),
                    json!({"name": "status", "in": "query", "schema": {"type": "string", "enum": ["active", "ended", "paused", "unanswered"]}}),
                    json!({"name": "cursor", "in": "query", "schema": {"type": "string"}}),
                ],
            )
        }
        ("GET", "/api/v1/chat/conversations/{id}/messages") => {
            op["security"] = json!([{"chatToken": []}]);
            op["responses"]["403"] = error_response("a customer token of another conversation");
            (
                "A conversation's messages after a sequence number, in order (catching up after a reconnect)",
                None,
                vec![
                    json!({"name": "after_seq", "in": "query", "schema": {"type": "integer", "minimum": 0}}),
                    json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}),
                ],
            )
        }
        ("GET", "/openapi.json") => {
            op.as_object_mut().map(|o| o.remove("security"));
            ("This document", None, vec![])
        }
        _ => ("", None, vec![]),
    };
    op["summary"] = json!(summary);
    let mut parameters = extra;
    if path.starts_with("/api/v1/admin/dead-letters/{id}") {
        // A dead letter's id is the table's bigserial.
        parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX}}));
    } else if path.contains("{id}") {
        parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 256}}));
    }
    if !parameters.is_empty() {
        op["parameters"] = json!(parameters);
    }
    if let Some(schema) = body {
        // Reconciliation's window may come in the query instead (or not at all).
        let required = !path.ends_with("/reconcile");
        op["requestBody"] = json!({"required": required, "content": {"application/json": {"schema": schema}}});
    }
    op
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.to_lowercase()] = operation(method, path);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Chatbot backend for Pancake pages: seed 001's message API, Pancake's webhook, admin and cache APIs."},
        "servers": [{"url": "http://127.0.0.1:8000"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "pancakeToken": {"type": "http", "scheme": "bearer", "description": "PANCAKE_ACCESS_TOKEN"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_ACCESS_TOKEN"},
                "widgetKey": {"type": "apiKey", "in": "header", "name": "X-Widget-Key", "description": "WIDGET_KEY, the public key a website embeds"},
                "chatToken": {"type": "http", "scheme": "bearer", "description": "a customer token (its conversation only), an agent token (AGENT_TOKENS) or ADMIN_ACCESS_TOKEN"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["success", "error"], "properties": {
                    "success": {"const": false},
                    "error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}},
                "MessageRequest": {"type": "object",
                    "required": ["conversation_id", "message_id", "message_content", "sender_id", "sender_type", "timestamp"],
                    "properties": {
                        "conversation_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "message_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "message_content": {"type": "string", "maxLength": 65536},
                        "sender_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "sender_type": {"enum": ["user", "customer", "agent", "bot", "system"]},
                        "timestamp": {"type": "number", "minimum": 0},
                        "metadata": {"type": "object"}}},
                "AssistantIds": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
                    "type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}},
                "Assistant": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "system_prompt": {"type": "string"}, "model": {"type": "string"},
                    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                    "page_ids": {"type": "array", "items": {"type": "string"}},
                    "collect_info_fields": {"type": "array", "items": {"type": "string"}},
                    "data_sources": {"type": "array"}, "answer_cache_enabled": {"type": "boolean"},
                    "is_default": {"type": "boolean"}}},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_the_router_serves_is_in_the_document() {
        let doc = document();
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method.to_lowercase()].is_object(),
                "{method} {path} is missing from /openapi.json"
            );
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
