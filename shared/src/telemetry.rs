//! Tracing set up once per process, honouring Lambda's advanced logging
//! controls: `AWS_LAMBDA_LOG_FORMAT` (`JSON`: one JSON object per line,
//! event fields at the top level; `Text`: `key=value` lines; unset: JSON, as
//! before) and `AWS_LAMBDA_LOG_LEVEL` (wins over `RUST_LOG`, which still
//! works locally with its full directive syntax; default `info`). Every line
//! carries a timestamp (locally nothing else would stamp it).
//!
//! Not `lambda_runtime::tracing::init_default_subscriber`, although it reads
//! the same variables: it nests event fields under `fields` (the request
//! line's `request_id` must be top-level), prints no time, and would drop the
//! guard below. Secrets never reach a field: the config prints them as
//! `[redacted]` and tokens are never recorded.
//!
//! `tokio_postgres` logs every statement's parameters at `debug` (message
//! texts, phone numbers): it stays at `info` whatever the level says, unless
//! `RUST_LOG` names it explicitly.

use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, util::SubscriberInitExt};

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// What the environment asks for: format and filter directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub directives: String,
}

impl LogSettings {
    /// From `AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL` and `RUST_LOG`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let format = match lookup("AWS_LAMBDA_LOG_FORMAT") {
            Some(f) if f.trim().eq_ignore_ascii_case("text") => LogFormat::Text,
            _ => LogFormat::Json,
        };
        // Lambda's levels; FATAL has no tracing level, ERROR is closest.
        let lambda_level =
            lookup("AWS_LAMBDA_LOG_LEVEL").and_then(|level| match level.trim().to_ascii_uppercase().as_str() {
                "TRACE" => Some("trace"),
                "DEBUG" => Some("debug"),
                "INFO" => Some("info"),
                "WARN" => Some("warn"),
                "ERROR" | "FATAL" => Some("error"),
                _ => None,
            });
        let directives = match lambda_level {
            Some(level) => filter_directives(Some(level)),
            None => filter_directives(lookup("RUST_LOG").as_deref()),
        };
        Self { format, directives }
    }
}

/// The filter directives for a `RUST_LOG` value (`None`: unset): as given,
/// plus `tokio_postgres=info` when they are more verbose than `info`
/// (`debug`, `trace`, `4`, `5`) and do not set `tokio_postgres` itself, and
/// the Lambda runtime held at `debug` under a global `trace`.
pub fn filter_directives(rust_log: Option<&str>) -> String {
    let base = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    let directives: Vec<&str> = base.split(',').map(str::trim).collect();
    let verbose = directives.iter().any(|d| {
        let level = d.rsplit('=').next().unwrap_or(d).to_ascii_lowercase();
        matches!(level.as_str(), "debug" | "trace" | "4" | "5")
    });
    let explicit = directives.iter().any(|d| *d == "tokio_postgres" || d.starts_with("tokio_postgres="));
    let mut filter = if verbose && !explicit { format!("{base},tokio_postgres=info") } else { base.to_owned() };
    // The Lambda runtime logs each raw event at trace: its headers carry
    // bearer tokens, its query the webhook's. A global trace never reaches it.
    let global_trace =
        directives.iter().any(|d| !d.contains('=') && matches!(d.to_ascii_lowercase().as_str(), "trace" | "5"));
    if global_trace && !directives.iter().any(|d| d.starts_with("lambda_runtime")) {
        filter.push_str(",lambda_runtime=debug,lambda_runtime_api_client=debug");
    }
    filter
}

/// Installs the subscriber the environment asks for, on stdout; a second
/// call is a no-op.
pub fn init() {
    init_with(&LogSettings::from_lookup(|name| std::env::var(name).ok()), std::io::stdout);
}

/// Installs the subscriber for `settings` writing to `writer` (and the
/// bridge from `log` records); `false` if one was already installed.
pub fn init_with<W>(settings: &LogSettings, writer: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber(settings, writer).try_init().is_ok()
}

/// The subscriber for `settings` writing to `writer`, not installed (a test
/// sets it as its thread's default to capture a request's lines).
pub fn subscriber<W>(settings: &LogSettings, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.directives).unwrap_or_else(|_| EnvFilter::new(filter_directives(None)));
    let builder = fmt().with_env_filter(filter).with_target(false).with_ansi(false).with_writer(writer);
    match settings.format {
        LogFormat::Json => {
            Box::new(builder.json().flatten_event(true).with_current_span(false).with_span_list(false).finish())
        }
        LogFormat::Text => Box::new(builder.finish()),
    }
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
            filter_directives(Some("trace")),
            "trace,tokio_postgres=info,lambda_runtime=debug,lambda_runtime_api_client=debug",
            "the runtime's raw events (tokens in headers) never reach a trace log"
        );
        assert_eq!(
            filter_directives(Some("debug,tokio_postgres::connection=info")),
            "debug,tokio_postgres::connection=info,tokio_postgres=info"
        );
        // A target directive beats the global level in EnvFilter.
        assert!(EnvFilter::try_new(filter_directives(Some("trace"))).is_ok());
    }

    #[test]
    fn lambdas_log_level_wins_over_rust_log_and_keeps_the_postgres_guard() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        let settings = LogSettings::from_lookup(env(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG"), ("RUST_LOG", "warn")]));
        assert_eq!(settings.directives, "debug,tokio_postgres=info");
        assert_eq!(settings.format, LogFormat::Json, "JSON unless Lambda asks for text");
        let settings = LogSettings::from_lookup(env(&[("AWS_LAMBDA_LOG_FORMAT", "Text"), ("RUST_LOG", "warn")]));
        assert_eq!((settings.format, settings.directives.as_str()), (LogFormat::Text, "warn"));
        assert_eq!(LogSettings::from_lookup(env(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")])).directives, "error");
    }
}
