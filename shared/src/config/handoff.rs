//! `HANDOFF`: how a webhook message reaches the code that answers it (see
//! [`crate::handoff`]).

use super::{ConfigError, Env, malformed};

/// How a webhook message reaches the code that answers it (`HANDOFF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffConfig {
    /// Only the background consumer answers, from the `jobs` stream.
    None,
    /// A task in this process answers at once (the local gateway, which
    /// never freezes; never in Lambda).
    Inline,
    /// An asynchronous invocation (`InvocationType=Event`) of the
    /// `process-conversation` function named here answers at once.
    Lambda { function: String },
}

pub(super) fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<HandoffConfig, ConfigError> {
    let function = env.get("PROCESS_FUNCTION_NAME");
    match (env.get("HANDOFF").map(|v| v.trim().to_ascii_lowercase()).as_deref(), function) {
        (None, Some(function)) | (Some("lambda"), Some(function)) => Ok(HandoffConfig::Lambda { function }),
        (Some("lambda"), None) => Err(ConfigError::Missing("PROCESS_FUNCTION_NAME")),
        (None, None) | (Some("none"), _) => Ok(HandoffConfig::None),
        (Some("inline"), _) => Ok(HandoffConfig::Inline),
        (Some(_), _) => Err(malformed("HANDOFF", "must be lambda, inline or none")),
    }
}
