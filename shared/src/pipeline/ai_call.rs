//! One AI call as operators see it: registered in Redis while in flight
//! (health's `active_ai_tasks` counts every process's calls, see
//! `redis/store/ai_calls.rs`) and timed (`AiLatency`). Registration runs
//! beside the call, not before it, so it adds no latency; the entry is
//! removed when the call returns, or, if the round is dropped mid-call (a
//! deadline), by a task spawned from the guard's `Drop`. A process that dies
//! mid-call leaves an entry that stops counting at its expiry.

use std::time::Duration;

use crate::{
    App,
    ai::{self, AiRequest},
    clock::{millis, now_ms},
    metrics,
};

/// How long past the AI timeout an entry may still count (the call's own
/// bookkeeping around the provider's answer).
const MARGIN: Duration = Duration::from_secs(5);

/// Asks the AI (`ai::ask`: timeout and fallback), counted while in flight.
pub(super) async fn ask(app: &App, request: AiRequest<'_>) -> ai::AiOutcome {
    let guard = InFlight::new(app);
    let until = now_ms() + millis(app.config.ai_timeout + MARGIN);
    let register = async {
        // While the breaker is open (degraded mode) Redis is not asked at all.
        if !guard.skip
            && let Err(err) = app.store.ai_call_started(&guard.id, until).await
        {
            tracing::debug!(error = %err, "AI call not registered as in flight");
        }
    };
    let ((), outcome) = tokio::join!(register, ai::ask(app.ai.as_ref(), request, &app.config));
    guard.finish().await;
    metrics::ai_latency(outcome.processing_time_ms);
    outcome
}

struct InFlight<'a> {
    app: &'a App,
    id: String,
    skip: bool,
    done: bool,
}

impl<'a> InFlight<'a> {
    fn new(app: &'a App) -> Self {
        let skip = app.store.breaker().is_open();
        Self { app, id: uuid::Uuid::new_v4().simple().to_string(), skip, done: false }
    }

    async fn finish(mut self) {
        self.done = true;
        if !self.skip {
            let _ = self.app.store.ai_call_finished(&self.id).await;
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done || self.skip {
            return;
        }
        // Dropped mid-call: remove the entry in the background (its expiry
        // covers a runtime that is going away).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (app, id) = (self.app.clone(), std::mem::take(&mut self.id));
            runtime.spawn(async move {
                let _ = app.store.ai_call_finished(&id).await;
            });
        }
    }
}
