//! CloudWatch Embedded Metric Format (EMF): the metrics the template's alarms
//! watch, printed to stdout as raw JSON objects, one per line, which
//! CloudWatch Logs turns into metrics without an API call. Namespace
//! `Switchboard`, dimension `Function` (`AWS_LAMBDA_FUNCTION_NAME`, or
//! `local-gateway`):
//!
//! | metric | unit | extra dimension | recorded |
//! | --- | --- | --- | --- |
//! | `MessagesHandled` | Count | `Status` | the answer status of `enhanced-handle-message`, the webhook's outcome; `rejected` (4xx) / `failed` (5xx) when either route refuses or fails |
//! | `AiLatency` | Milliseconds | — | per AI call (not answer-cache hits) |
//! | `CacheHits`, `CacheMisses` | Count | `Kind` | per cache kind read |
//! | `QueueLag` | Milliseconds | — | per consumer batch: age of its oldest entry (the stream id's millisecond part) |
//! | `DeadLetters` | Count | — | each entry the consumer dead-letters |
//!
//! **Aggregated per request (or per consumer invocation)**, not a line per
//! event: [`scope`] collects what one request observes in a task-local
//! [`Observed`] (a few counters and short vectors, no lock, no I/O), and the
//! entry point prints it once at the end: one document for the function-level
//! metrics and the status, one per cache kind touched (EMF takes one value
//! per dimension per document). Values of one metric are an array (EMF allows
//! 100 per document). An event outside any scope (the local gateway's
//! continuous consumer, a spawned task) is printed on its own.
//!
//! The scope also carries the request's conversation id: the request's log
//! line names it, error lines name it, and every EMF document carries it as
//! a property (searchable in Logs Insights, not a dimension).
//!
//! **Switch**: `METRICS=emf|off`, default `emf` inside Lambda
//! (`AWS_LAMBDA_FUNCTION_NAME` set) and `off` elsewhere, so local logs stay
//! readable. Off, nothing is printed and only the request log's counts are
//! kept. The lines bypass `tracing`, so the JSON log format never wraps them.

use std::{
    cell::RefCell,
    future::Future,
    io::Write as _,
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "Switchboard";
/// The `Function` dimension's value outside Lambda.
pub const LOCAL_FUNCTION: &str = "local-gateway";
/// EMF's limit of values of one metric in one document.
const MAX_VALUES: usize = 100;

/// Whether EMF lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Emf,
    Off,
}

impl Mode {
    /// `METRICS` as given (`None`: unset); the default depends on whether
    /// this runs inside Lambda.
    pub fn parse(value: Option<&str>, in_lambda: bool) -> Result<Self, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => Ok(if in_lambda { Self::Emf } else { Self::Off }),
            Some("emf") => Ok(Self::Emf),
            Some("off") => Ok(Self::Off),
            Some(_) => Err("METRICS must be `emf` or `off`".into()),
        }
    }
}

#[derive(Debug)]
enum Sink {
    Stdout,
    Memory(Captured),
}

#[derive(Debug)]
struct Setup {
    mode: Mode,
    function: String,
    sink: Sink,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

/// Reads `METRICS` and `AWS_LAMBDA_FUNCTION_NAME` once per process (a second
/// call changes nothing). Never called: metrics are off.
pub fn init() -> Result<(), String> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok().filter(|f| !f.is_empty());
    let mode = Mode::parse(std::env::var("METRICS").ok().as_deref(), function.is_some())?;
    let function = function.unwrap_or_else(|| LOCAL_FUNCTION.into());
    let _ = SETUP.set(Setup { mode, function, sink: Sink::Stdout });
    Ok(())
}

/// EMF lines kept in memory instead of printed (tests, embedders).
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|lines| lines.clone()).unwrap_or_default()
    }
}

/// Turns EMF on for this process with the lines kept in memory (function
/// `local-gateway`). `None` if [`init`] already chose stdout.
pub fn capture() -> Option<Captured> {
    let captured = Captured::default();
    let setup = SETUP.get_or_init(|| Setup {
        mode: Mode::Emf,
        function: LOCAL_FUNCTION.into(),
        sink: Sink::Memory(captured.clone()),
    });
    match &setup.sink {
        Sink::Memory(captured) => Some(captured.clone()),
        Sink::Stdout => None,
    }
}

fn emitting() -> Option<&'static Setup> {
    SETUP.get().filter(|s| s.mode == Mode::Emf)
}

/// What one request (or one consumer invocation) observed.
#[derive(Debug, Default)]
pub struct Observed {
    conversation_id: Option<String>,
    handled: Option<&'static str>,
    ai_latency_ms: Vec<f64>,
    queue_lag_ms: Vec<f64>,
    dead_letters: u64,
    /// Per cache kind: (kind, hits, misses); a handful of kinds, so a
    /// vector searched linearly.
    cache: Vec<(&'static str, u64, u64)>,
}

impl Observed {
    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation_id.as_deref()
    }

    /// The `Status` recorded for `MessagesHandled`, if any.
    pub fn handled(&self) -> Option<&'static str> {
        self.handled
    }

    /// Cache reads of this request: (hits, misses) over every kind.
    pub fn cache_totals(&self) -> (u64, u64) {
        self.cache.iter().fold((0, 0), |(h, m), (_, hits, misses)| (h + hits, m + misses))
    }

    /// Records `MessagesHandled` with this status unless one is recorded.
    pub fn handled_if_unset(&mut self, status: &'static str) {
        self.handled.get_or_insert(status);
    }

    fn is_empty(&self) -> bool {
        self.handled.is_none()
            && self.ai_latency_ms.is_empty()
            && self.queue_lag_ms.is_empty()
            && self.dead_letters == 0
            && self.cache.is_empty()
    }

    /// Prints the EMF documents (when metrics are on); `request_id` is a
    /// property of each.
    pub fn emit(&self, request_id: Option<&str>) {
        let Some(setup) = emitting() else { return };
        if self.is_empty() {
            return;
        }
        let lines = self.documents(&setup.function, request_id, crate::clock::now_ms());
        match &setup.sink {
            Sink::Stdout => {
                // One write per line under stdout's lock: never interleaved
                // with a log line.
                let mut out = std::io::stdout().lock();
                for line in lines {
                    let _ = out.write_all(format!("{line}\n").as_bytes());
                }
                let _ = out.flush();
            }
            Sink::Memory(captured) => {
                if let Ok(mut kept) = captured.0.lock() {
                    kept.extend(lines);
                }
            }
        }
    }

    /// The EMF documents of this record, one JSON object per line.
    pub fn documents(&self, function: &str, request_id: Option<&str>, now_ms: u64) -> Vec<String> {
        let document = |directives: Vec<Value>, mut fields: Map<String, Value>| {
            fields.insert("_aws".into(), json!({"Timestamp": now_ms, "CloudWatchMetrics": directives}));
            fields.insert("Function".into(), json!(function));
            if let Some(id) = request_id {
                fields.insert("request_id".into(), json!(id));
            }
            if let Some(id) = &self.conversation_id {
                fields.insert("conversation_id".into(), json!(id));
            }
            Value::Object(fields).to_string()
        };
        let directive = |dimensions: &[&str], metrics: &[(&str, &str)]| {
            json!({
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions],
                "Metrics": metrics.iter().map(|(name, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            })
        };
        let mut lines = Vec::new();
        let mut fields = Map::new();
        let mut plain = Vec::new();
        if !self.ai_latency_ms.is_empty() {
            plain.push(("AiLatency", "Milliseconds"));
            fields.insert("AiLatency".into(), json!(self.ai_latency_ms));
        }
        if !self.queue_lag_ms.is_empty() {
            plain.push(("QueueLag", "Milliseconds"));
            fields.insert("QueueLag".into(), json!(self.queue_lag_ms));
        }
        if self.dead_letters > 0 {
            plain.push(("DeadLetters", "Count"));
            fields.insert("DeadLetters".into(), json!(self.dead_letters));
        }
        let mut directives = Vec::new();
        if !plain.is_empty() {
            directives.push(directive(&["Function"], &plain));
        }
        if let Some(status) = self.handled {
            directives.push(directive(&["Function", "Status"], &[("MessagesHandled", "Count")]));
            fields.insert("Status".into(), json!(status));
            fields.insert("MessagesHandled".into(), json!(1));
        }
        if !directives.is_empty() {
            lines.push(document(directives, fields));
        }
        for (kind, hits, misses) in &self.cache {
            let mut fields = Map::new();
            fields.insert("Kind".into(), json!(kind));
            fields.insert("CacheHits".into(), json!(hits));
            fields.insert("CacheMisses".into(), json!(misses));
            let metrics = [("CacheHits", "Count"), ("CacheMisses", "Count")];
            lines.push(document(vec![directive(&["Function", "Kind"], &metrics)], fields));
        }
        lines
    }
}

tokio::task_local! {
    static SCOPE: RefCell<Observed>;
}

/// Runs `future` collecting what it observes; returns its output and the
/// record (the caller logs and emits it).
pub async fn scope<F: Future>(future: F) -> (F::Output, Observed) {
    SCOPE
        .scope(RefCell::new(Observed::default()), async move {
            let output = future.await;
            (output, SCOPE.with(RefCell::take))
        })
        .await
}

/// Applies `f` to the current scope's record, or, outside any scope and
/// with metrics on, to a record of its own printed at once.
fn observe(f: impl FnOnce(&mut Observed)) {
    let mut f = Some(f);
    let in_scope = SCOPE.try_with(|cell| {
        if let (Some(f), Ok(mut observed)) = (f.take(), cell.try_borrow_mut()) {
            f(&mut observed);
            // A long consumer invocation: print before EMF's value limit.
            if observed.ai_latency_ms.len() >= MAX_VALUES || observed.queue_lag_ms.len() >= MAX_VALUES {
                let full = Observed {
                    conversation_id: observed.conversation_id.clone(),
                    ai_latency_ms: std::mem::take(&mut observed.ai_latency_ms),
                    queue_lag_ms: std::mem::take(&mut observed.queue_lag_ms),
                    ..Observed::default()
                };
                full.emit(None);
            }
        }
    });
    if in_scope.is_err()
        && emitting().is_some()
        && let Some(f) = f.take()
    {
        let mut own = Observed::default();
        f(&mut own);
        own.emit(None);
    }
}

/// The conversation this request is about (the first one named wins).
pub fn conversation(id: &str) {
    let _ = SCOPE.try_with(|cell| {
        if let Ok(mut observed) = cell.try_borrow_mut()
            && observed.conversation_id.is_none()
        {
            observed.conversation_id = Some(id.to_owned());
        }
    });
}

/// The current request's conversation, for error lines.
pub fn current_conversation() -> Option<String> {
    SCOPE.try_with(|cell| cell.try_borrow().ok().and_then(|o| o.conversation_id.clone())).ok().flatten()
}

/// `MessagesHandled` with `status`.
pub fn handled(status: &'static str) {
    observe(|o| o.handled = Some(status));
}

/// `AiLatency` of one AI call.
pub fn ai_latency(ms: f64) {
    observe(|o| o.ai_latency_ms.push(crate::clock::round_ms(ms)));
}

/// `CacheHits` or `CacheMisses` of `kind`.
pub fn cache(kind: &'static str, hit: bool) {
    observe(|o| {
        let index = match o.cache.iter().position(|(k, _, _)| *k == kind) {
            Some(index) => index,
            None => {
                o.cache.push((kind, 0, 0));
                o.cache.len() - 1
            }
        };
        let counts = &mut o.cache[index];
        if hit {
            counts.1 += 1;
        } else {
            counts.2 += 1;
        }
    });
}

/// `QueueLag` of one batch: the age of its oldest entry, from the
/// millisecond part of the stream ids (`<ms>-<seq>`). Nothing for an empty batch.
pub fn queue_lag<'a>(ids: impl IntoIterator<Item = &'a str>) {
    let oldest = ids.into_iter().filter_map(|id| id.split('-').next()?.parse::<u64>().ok()).min();
    if let Some(oldest) = oldest {
        let lag = crate::clock::now_ms().saturating_sub(oldest);
        observe(|o| o.queue_lag_ms.push(lag as f64));
    }
}

/// `DeadLetters`: one entry dead-lettered.
pub fn dead_letter() {
    observe(|o| o.dead_letters += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_default_to_emf_only_inside_lambda() {
        assert_eq!(Mode::parse(None, true), Ok(Mode::Emf));
        assert_eq!(Mode::parse(None, false), Ok(Mode::Off));
        assert_eq!(Mode::parse(Some("EMF"), false), Ok(Mode::Emf));
        assert_eq!(Mode::parse(Some("off"), true), Ok(Mode::Off));
        assert!(Mode::parse(Some("statsd"), true).is_err());
    }

    #[test]
    fn one_document_carries_the_status_and_the_function_metrics_and_one_each_cache_kind() {
        let observed = Observed {
            conversation_id: Some("c1".into()),
            handled: Some("completed"),
            ai_latency_ms: vec![12.5],
            cache: vec![("assistant", 1, 0), ("thread", 0, 1)],
            ..Observed::default()
        };
        let lines = observed.documents("fn", Some("req"), 1_700_000_000_000);
        assert_eq!(lines.len(), 3);
        let first: Value = serde_json::from_str(&lines[0]).unwrap_or_default();
        assert_eq!(first["Status"], "completed");
        assert_eq!(first["MessagesHandled"], 1);
        assert_eq!(first["AiLatency"], json!([12.5]));
        assert_eq!(first["_aws"]["CloudWatchMetrics"].as_array().map(Vec::len), Some(2));
        let thread: Value = serde_json::from_str(&lines[2]).unwrap_or_default();
        assert_eq!((thread["Kind"].as_str(), thread["CacheMisses"].as_u64()), (Some("thread"), Some(1)));
    }

    #[test]
    fn queue_lag_reads_the_oldest_ids_milliseconds() {
        let (_, observed) = futures::executor::block_on(scope(async {
            queue_lag(["1-0", "5-3", "not-an-id"]);
        }));
        assert!(observed.queue_lag_ms[0] >= (crate::clock::now_ms() - 1_000) as f64);
    }
}
