//! Script replies read into typed values: arrays, strings, JSON members and
//! the `{ctx[], owed[member, seq, …]}` pair every snapshot comes as. A reply
//! of the wrong shape is a protocol error (logged, `500`), never a panic.

use redis::Value;
use serde::Serialize;

use crate::{
    domain::{ContextEntry, OwedMessage, Snapshot},
    error::AppError,
};

pub(super) fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(super) fn protocol(what: &str) -> AppError {
    tracing::error!(reply = what, "unexpected reply from a conversation script");
    AppError::Internal
}

pub(super) fn array(value: Value) -> Result<Vec<Value>, AppError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(protocol("expected an array")),
    }
}

pub(super) fn string(value: Option<Value>) -> Result<String, AppError> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).map_err(|_| protocol("utf8")),
        Some(Value::SimpleString(s)) => Ok(s),
        Some(Value::Int(i)) => Ok(i.to_string()),
        _ => Err(protocol("expected a string")),
    }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(value: Option<Value>) -> Result<T, AppError> {
    serde_json::from_str(&string(value)?).map_err(|_| protocol("json member"))
}

pub(super) fn snapshot(ctx: Option<Value>, owed: Option<Value>) -> Result<Snapshot, AppError> {
    let context = array(ctx.unwrap_or(Value::Nil))?
        .into_iter()
        .map(|v| parse_json(Some(v)))
        .collect::<Result<Vec<ContextEntry>, _>>()?;
    let mut owed_items = Vec::new();
    let mut flat = array(owed.unwrap_or(Value::Nil))?.into_iter();
    // WITHSCORES replies are flat [member, score, ...] from a script and
    // may be pairs from RESP3 clients; accept both.
    while let Some(item) = flat.next() {
        let (member, score) = match item {
            Value::Array(mut pair) if pair.len() == 2 => {
                let score = pair.pop();
                (pair.pop(), score)
            }
            member => (Some(member), flat.next()),
        };
        let mut message: OwedMessage = parse_json(member)?;
        message.seq = match score {
            Some(Value::Double(d)) => d as i64,
            other => string(other)?.parse::<f64>().map_err(|_| protocol("owed score"))? as i64,
        };
        owed_items.push(message);
    }
    // Snapshots read without admit (claim, debounce, restarts) belong to
    // conversations with messages: treat them as returning.
    Ok(Snapshot { context, owed: owed_items, returning: true })
}
