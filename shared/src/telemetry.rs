//! Tracing set up once per process: JSON lines (CloudWatch parses them),
//! level from `RUST_LOG` (default `info`). Secrets never reach a field: the
//! config prints them as `[redacted]` and tokens are never recorded.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the JSON subscriber; a second call is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time() // Lambda stamps every line itself.
        .try_init();
}
