//! The invocation's deadline (issue 11): no AI round starts that could not
//! finish before it; what is left goes to the background re-drive, never
//! cut off mid-way.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{TestEnv, message};
use futures::{FutureExt, future::BoxFuture};
use serde_json::{Value, json};
use switchboard::{
    ai::{AiAnswer, AiError, AiProvider, AiRequest, embedded},
    deadline,
};

/// An AI that takes its time and counts its calls.
#[derive(Debug)]
struct Slow(Duration, Arc<AtomicUsize>);

impl AiProvider for Slow {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>> {
        async move {
            self.1.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.0).await;
            Ok(embedded::respond(&request.pending_text()))
        }
        .boxed()
    }
}

/// What one round needs with the test's settings (see `round_time` in the
/// pipeline): the AI timeout, the delivery budget, Pancake's call timeout
/// (10 s) and 2 s.
fn round(env: &TestEnv) -> Duration {
    env.app.config.ai_timeout + env.app.config.delivery_budget + Duration::from_secs(12)
}

fn of_kind(stream: &[(String, Option<String>, Value)], kind: &str) -> Vec<Value> {
    stream.iter().filter(|(k, _, _)| k == kind).map(|(_, _, p)| p.clone()).collect()
}

#[tokio::test]
async fn a_restart_that_could_not_finish_before_the_deadline_is_not_started_and_newer_messages_go_to_the_redrive() {
    let calls = Arc::new(AtomicUsize::new(0));
    let ai = Arc::new(Slow(Duration::from_millis(600), calls.clone()));
    let env = Arc::new(TestEnv::with(&[("MAX_RESTARTS", "2")], Some(ai)).await);
    // Room for the first round, not for a second one after it.
    let ends = Instant::now() + round(&env) + Duration::from_millis(400);
    let first = {
        let env = env.clone();
        tokio::spawn(deadline::within(Some(ends), async move { env.post(&message("dl", "m1", "xin chào", 1.0)).await }))
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    env.post(&message("dl", "m2", "giá bao nhiêu", 2.0)).await;
    let (_, _, body) = first.await.unwrap();
    let result = &body["result"];
    assert_eq!(result["status"], "restart_needed", "a restart budget was left, the deadline was not: {body}");
    assert_eq!(result["newer_messages"], json!([{"message_id": "m2", "timestamp": 2.0}]));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no second AI round was started");
    assert_eq!(of_kind(&env.stream().await, "redrive_conversation").len(), 1);
}

#[tokio::test]
async fn with_no_time_for_one_round_the_message_is_handed_to_the_redrive_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let env = TestEnv::with(&[], Some(Arc::new(Slow(Duration::from_millis(10), calls.clone())))).await;
    let ends = Instant::now() + switchboard::pipeline::min_round_time(&env.app) - Duration::from_secs(1);
    let (_, _, body) = deadline::within(Some(ends), env.post(&message("late", "m1", "xin chào", 1.0))).await;
    assert_eq!(body["result"]["status"], "locked", "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no round was started");
    let redrive = of_kind(&env.stream().await, "redrive_conversation");
    assert_eq!(redrive.len(), 1);
    assert_eq!(redrive[0]["reason"], "deadline");
    // The re-drive answers it (no deadline in the way now): owed, lock free.
    env.consumer().await;
    let answered = switchboard::pipeline::redrive(&env.app, &common::cid("late"), None, None).await.unwrap();
    assert!(answered.is_some(), "the lock was given back and the message is still owed");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_ai_call_that_would_outrun_the_deadline_is_abandoned_and_handed_to_the_redrive() {
    let calls = Arc::new(AtomicUsize::new(0));
    let env = TestEnv::with(&[], Some(Arc::new(Slow(Duration::from_secs(7), calls.clone())))).await;
    // Time for a short round only: the AI gets about 5.5 s (what is left
    // before delivery's share), and takes 7.
    let ends = Instant::now() + switchboard::pipeline::min_round_time(&env.app) + Duration::from_millis(500);
    let (_, _, body) = deadline::within(Some(ends), env.post(&message("outrun", "m1", "xin chào", 1.0))).await;
    assert_eq!(body["result"]["status"], "locked", "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stream = env.stream().await;
    assert_eq!(of_kind(&stream, "persist_answer").len(), 0, "nothing was recorded or sent");
    assert_eq!(of_kind(&stream, "redrive_conversation").len(), 1, "the message went to the re-drive");
}

#[tokio::test]
async fn the_consumer_leaves_a_conversation_to_answer_pending_when_no_round_fits_before_its_deadline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let env = TestEnv::with(
        &[("CONSUMER_BLOCK_MS", "20"), ("CONSUMER_CLAIM_IDLE_MS", "50")],
        Some(Arc::new(Slow(Duration::from_millis(10), calls.clone()))),
    )
    .await;
    let body = message("queued", "m1", "xin chào", 1.0);
    let message = switchboard::domain::IncomingMessage::parse(body.to_string().as_bytes(), 65_536).unwrap();
    let persist = serde_json::to_string(&switchboard::jobs::PersistMessage::of(&message)).unwrap();
    let process = json!({"conversation_id": "queued", "page_id": null, "assistant_id": null, "reason": "webhook"});
    let process = process.to_string();
    let mode = switchboard::redis::AdmitMode::Defer { process_job: &process };
    env.app.store.admit(&message, &persist, mode).await.unwrap();
    let consumer = env.consumer().await;
    let near = Instant::now() + Duration::from_secs(2);
    for _ in 0..5 {
        deadline::within(Some(near), consumer.step()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no round started this close to the deadline");
    assert_eq!(env.count("SELECT COUNT(*) FROM dead_letters").await, 0);
    // The next invocation, with time: answered.
    common::drain(&consumer).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let answers = of_kind(&env.stream().await, "persist_answer");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["covered_message_ids"], json!(["m1"]));
}
