//! Tracing set up once per process: JSON lines (CloudWatch parses them),
//! level from `RUST_LOG` (default `info`). Secrets never reach a field: the
//! config prints them as `[redacted]` and tokens are never recorded.
//!
//! `tokio_postgres` logs every statement's parameters at `debug` (message
//! texts, phone numbers): it stays at `info` whatever `RUST_LOG` says, unless
//! `RUST_LOG` names it explicitly.

use tracing_subscriber::{EnvFilter, fmt};

/// The filter directives for a `RUST_LOG` value (`None`: unset): as given,
/// plus `tokio_postgres=info` when they are more verbose than `info`
/// (`debug`, `trace`, `4`, `5`) and do not set `tokio_postgres` itself.
pub fn filter_directives(rust_log: Option<&str>) -> String {
    let base = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    let directives: Vec<&str> = base.split(',').map(str::trim).collect();
    let verbose = directives.iter().any(|d| {
        let level = d.rsplit('=').next().unwrap_or(d).to_ascii_lowercase();
        matches!(level.as_str(), "debug" | "trace" | "4" | "5")
    });
    let explicit = directives.iter().any(|d| *d == "tokio_postgres" || d.starts_with("tokio_postgres="));
    if verbose && !explicit { format!("{base},tokio_postgres=info") } else { base.to_owned() }
}

/// Installs the JSON subscriber; a second call is a no-op.
pub fn init() {
    let directives = filter_directives(std::env::var("RUST_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(filter_directives(None)));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time() // Lambda stamps every line itself.
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_logging_never_turns_on_the_postgres_parameter_log() {
        assert_eq!(filter_directives(Some("debug")), "debug,tokio_postgres=info");
        assert_eq!(filter_directives(Some("switchboard=trace")), "switchboard=trace,tokio_postgres=info");
        assert_eq!(filter_directives(None), "info");
        assert_eq!(filter_directives(Some("warn")), "warn", "a quieter level stays quieter");
        assert_eq!(filter_directives(Some("debug,tokio_postgres=debug")), "debug,tokio_postgres=debug");
        assert_eq!(filter_directives(Some("4")), "4,tokio_postgres=info");
        assert_eq!(
            filter_directives(Some("debug,tokio_postgres::connection=info")),
            "debug,tokio_postgres::connection=info,tokio_postgres=info"
        );
        // A target directive beats the global level in EnvFilter.
        assert!(EnvFilter::try_new(filter_directives(Some("trace"))).is_ok());
    }
}
