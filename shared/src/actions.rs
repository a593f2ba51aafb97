//! Actions: extraction from an AI answer and validation of the seven types
//! (DESIGN §6). Invalid or unknown actions are rejected with a reason and
//! never executed; a rejected action never blocks the valid ones beside it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{ai::AiAnswer, domain::Assistant};

/// Every action type this backend executes, as reported by health.
pub const SUPPORTED_ACTION_TYPES: [&str; 7] = [
    "send_message",
    "send_quick_replies",
    "send_carousel",
    "transfer_to_agent",
    "collect_info",
    "execute_api",
    "end_conversation",
];

/// At most this many actions per answer; more is a runaway model, not a reply.
pub const MAX_ACTIONS: usize = 10;
const MAX_QUICK_REPLIES: usize = 13;
const MAX_CAROUSEL_ELEMENTS: usize = 10;

/// A validated action. `action_id` is its idempotency key all the way to Pancake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub action_id: Uuid,
    #[serde(rename = "type")]
    pub action_type: String,
    pub data: Map<String, Value>,
}

impl Action {
    /// Seed 001's shape: `{"type", "data"}`.
    pub fn public_view(&self) -> Value {
        json!({ "type": self.action_type, "data": self.data })
    }

    /// The text this action shows the customer, if any. Quick replies and
    /// carousels degrade to text: Pancake's public send API takes text only.
    pub fn customer_text(&self) -> Option<String> {
        let message = self.data.get("message").and_then(Value::as_str).unwrap_or_default();
        match self.action_type.as_str() {
            "send_message" => Some(message.to_owned()),
            "send_quick_replies" => {
                let options = self.data.get("quick_replies").and_then(Value::as_array).into_iter().flatten();
                let lines: Vec<String> = options
                    .enumerate()
                    .map(|(i, o)| format!("{}. {}", i + 1, option_title(o).unwrap_or_default()))
                    .collect();
                Some(format!("{message}\n{}", lines.join("\n")))
            }
            "send_carousel" => {
                let elements = self.data.get("elements").and_then(Value::as_array).into_iter().flatten();
                let lines: Vec<String> = elements
                    .enumerate()
                    .map(|(i, e)| {
                        let title = e.get("title").and_then(Value::as_str).unwrap_or_default();
                        match e.get("subtitle").and_then(Value::as_str) {
                            Some(sub) if !sub.is_empty() => format!("{}. {title} — {sub}", i + 1),
                            _ => format!("{}. {title}", i + 1),
                        }
                    })
                    .collect();
                let head = if message.is_empty() { String::new() } else { format!("{message}\n") };
                Some(format!("{head}{}", lines.join("\n")))
            }
            _ => None,
        }
    }
}

/// An action the AI proposed that will not run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedAction {
    #[serde(rename = "type")]
    pub action_type: String,
    pub reason: String,
}

fn option_title(option: &Value) -> Option<&str> {
    match option {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("title").and_then(Value::as_str),
        _ => None,
    }
    .filter(|s| !s.trim().is_empty())
}

fn non_empty_str<'a>(data: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match data.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("data.{key} must not be empty")),
        Some(_) => Err(format!("data.{key} must be a string")),
        None => Err(format!("data.{key} is required")),
    }
}

fn non_empty_array<'a>(data: &'a Map<String, Value>, key: &str, max: usize) -> Result<&'a Vec<Value>, String> {
    match data.get(key) {
        Some(Value::Array(items)) if items.is_empty() => Err(format!("data.{key} must not be empty")),
        Some(Value::Array(items)) if items.len() > max => Err(format!("data.{key} has more than {max} items")),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("data.{key} must be an array")),
        None => Err(format!("data.{key} is required")),
    }
}

/// Validates one action's data in place (filling defaults such as the
/// assistant's `collect_info` fields).
fn validate(action_type: &str, data: &mut Map<String, Value>, assistant: &Assistant) -> Result<(), String> {
    match action_type {
        "send_message" => non_empty_str(data, "message").map(drop),
        "send_quick_replies" => {
            non_empty_str(data, "message")?;
            if data.get("quick_replies").is_none()
                && let Some(options) = data.remove("options")
            {
                data.insert("quick_replies".into(), options);
            }
            let options = non_empty_array(data, "quick_replies", MAX_QUICK_REPLIES)?;
            match options.iter().position(|o| option_title(o).is_none()) {
                Some(i) => Err(format!("data.quick_replies[{i}] needs a non-empty title")),
                None => Ok(()),
            }
        }
        "send_carousel" => {
            let elements = non_empty_array(data, "elements", MAX_CAROUSEL_ELEMENTS)?;
            match elements
                .iter()
                .position(|e| e.get("title").and_then(Value::as_str).is_none_or(|t| t.trim().is_empty()))
            {
                Some(i) => Err(format!("data.elements[{i}] needs a non-empty title")),
                None => Ok(()),
            }
        }
        "transfer_to_agent" | "end_conversation" => match data.get("reason") {
            None | Some(Value::String(_)) => Ok(()),
            Some(_) => Err("data.reason must be a string".into()),
        },
        "collect_info" => {
            let requested: Vec<String> = match data.get("fields") {
                None => assistant.collect_info_fields.clone(),
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(String::from).collect(),
                Some(_) => return Err("data.fields must be an array of strings".into()),
            };
            // Only fields of the assistant's schema are gathered (when it has one).
            let fields: Vec<String> = requested
                .into_iter()
                .filter(|f| assistant.collect_info_fields.is_empty() || assistant.collect_info_fields.contains(f))
                .collect();
            if fields.is_empty() {
                return Err("data.fields names no field of the assistant's schema".into());
            }
            data.insert("fields".into(), json!(fields));
            Ok(())
        }
        "execute_api" => non_empty_str(data, "integration").map(drop),
        other => Err(format!("unknown action type {other:?}")),
    }
}

/// The validated actions of an answer and the rejected ones. With no actions
/// proposed, the reply text becomes one `send_message`; when the proposed
/// actions show the customer nothing, the reply text is sent first.
pub fn extract(answer: &AiAnswer, assistant: &Assistant) -> (Vec<Action>, Vec<RejectedAction>) {
    let proposed = answer
        .actions
        .clone()
        .unwrap_or_else(|| vec![json!({"type": "send_message", "data": {"message": answer.response_text}})]);
    let mut actions = Vec::new();
    let mut rejected = Vec::new();
    for (index, proposal) in proposed.into_iter().enumerate() {
        let Value::Object(mut object) = proposal else {
            rejected.push(RejectedAction { action_type: String::new(), reason: "an action must be an object".into() });
            continue;
        };
        let action_type = object.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        if index >= MAX_ACTIONS {
            rejected.push(RejectedAction { action_type, reason: format!("more than {MAX_ACTIONS} actions") });
            continue;
        }
        // Accept both {"type", "data": {...}} and the flat {"type", "message": ...}.
        let mut data = match object.remove("data") {
            Some(Value::Object(data)) => data,
            Some(_) => {
                rejected.push(RejectedAction { action_type, reason: "data must be an object".into() });
                continue;
            }
            None => {
                object.remove("type");
                object
            }
        };
        match validate(&action_type, &mut data, assistant) {
            Ok(()) => actions.push(Action { action_id: Uuid::new_v4(), action_type, data }),
            Err(reason) => rejected.push(RejectedAction { action_type, reason }),
        }
    }
    let shows_text = actions.iter().any(|a| a.customer_text().is_some());
    if !shows_text && !answer.response_text.trim().is_empty() {
        let mut data = Map::new();
        data.insert("message".into(), json!(answer.response_text));
        actions.insert(0, Action { action_id: Uuid::new_v4(), action_type: "send_message".into(), data });
    }
    (actions, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assistant() -> Assistant {
        Assistant {
            id: "a".into(),
            name: "a".into(),
            system_prompt: String::new(),
            model: "embedded".into(),
            temperature: 0.3,
            page_ids: vec![],
            collect_info_fields: vec!["phone".into(), "name".into()],
            answer_cache_enabled: true,
            config_version: 1,
        }
    }

    fn answer(actions: Value) -> AiAnswer {
        AiAnswer {
            response_text: "Xin chào".into(),
            intent: "greeting".into(),
            confidence: 0.9,
            entities: Map::new(),
            model_used: "m".into(),
            actions: actions.as_array().cloned(),
        }
    }

    #[test]
    fn all_seven_types_validate_and_unknown_ones_are_rejected_with_a_reason() {
        let (ok, bad) = extract(
            &answer(json!([
                {"type": "send_message", "data": {"message": "hi"}},
                {"type": "send_quick_replies", "data": {"message": "pick", "quick_replies": ["a", {"title": "b"}]}},
                {"type": "send_carousel", "data": {"elements": [{"title": "Áo", "subtitle": "200k"}]}},
                {"type": "transfer_to_agent", "data": {"reason": "asked"}},
                {"type": "collect_info", "data": {"fields": ["phone", "shoe_size"]}},
                {"type": "execute_api", "data": {"integration": "crm"}},
                {"type": "end_conversation"},
                {"type": "launch_rocket", "data": {}},
                {"type": "send_message", "data": {"message": ""}},
            ])),
            &assistant(),
        );
        let types: Vec<&str> = ok.iter().map(|a| a.action_type.as_str()).collect();
        assert_eq!(types, SUPPORTED_ACTION_TYPES);
        assert_eq!(ok[4].data["fields"], json!(["phone"]));
        assert_eq!(bad.len(), 2);
        assert!(bad[0].reason.contains("unknown action type"));
        assert!(bad[1].reason.contains("message"));
    }

    #[test]
    fn no_proposed_actions_means_one_send_message_with_the_reply() {
        let (ok, bad) = extract(&answer(Value::Null), &assistant());
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].public_view(), json!({"type": "send_message", "data": {"message": "Xin chào"}}));
        assert!(bad.is_empty());
    }

    #[test]
    fn quick_replies_and_carousels_degrade_to_numbered_text() {
        let (ok, _) = extract(
            &answer(json!([{"type": "send_quick_replies", "data": {"message": "Chọn", "options": ["A", "B"]}}])),
            &assistant(),
        );
        assert_eq!(ok[0].customer_text().unwrap(), "Chọn\n1. A\n2. B");
    }

    #[test]
    fn a_transfer_alone_still_sends_the_reply_text() {
        let (ok, _) = extract(&answer(json!([{"type": "transfer_to_agent"}])), &assistant());
        let types: Vec<&str> = ok.iter().map(|a| a.action_type.as_str()).collect();
        assert_eq!(types, ["send_message", "transfer_to_agent"]);
    }
}
