//! The hand-off: a webhook message admitted and acknowledged is carried at
//! once to the code that answers it, instead of waiting for the background
//! consumer's loop (issue 13).
//!
//! In AWS it is an asynchronous invocation (`InvocationType=Event`) of the
//! `process-conversation` function: Lambda queues it, starts it within
//! milliseconds, scales it with the number of conversations, retries a
//! failed run twice and sends what still fails to the function's on-failure
//! destination. Chosen over SQS with an event source mapping because it adds
//! no poller between the acknowledgement and the answer, and one conversation
//! per invocation needs no partial-batch bookkeeping. Locally the gateway
//! answers in a task of its own (`inline`): it never freezes.
//!
//! Nothing depends on the hand-off arriving: admit has already written the
//! `process_conversation` entry to the `jobs` stream (marked `handed_off`),
//! and the consumer answers it once it has been pending for
//! `CONSUMER_CLAIM_IDLE_MS`; a hand-off that fails to send is followed by an
//! entry the consumer runs at once. Nothing is answered twice either: every
//! answer starts by claiming the conversation's lock, and a claim finds
//! nothing owed once another has answered.

use std::time::Duration;

use aws_sdk_lambda::{primitives::Blob, types::InvocationType};
use tokio::sync::{OnceCell, mpsc};

use crate::{config::HandoffConfig, jobs::Redrive};

/// How long sending one hand-off may take (the webhook waits for it):
/// Lambda's asynchronous invoke answers in tens of milliseconds; past this
/// the webhook falls back to the stream and answers Pancake.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("hand-off not sent: {0}")]
pub struct HandoffError(String);

/// Where hand-offs go.
#[derive(Debug, Clone)]
pub enum Handoff {
    /// No hand-off: the consumer answers from the stream.
    None,
    /// To a task of this process (the local gateway).
    Inline(mpsc::UnboundedSender<Redrive>),
    /// To the `process-conversation` Lambda function (client built on first use).
    Lambda { function: String, client: std::sync::Arc<OnceCell<aws_sdk_lambda::Client>> },
}

impl Handoff {
    /// The hand-off the configuration names. `inline` needs a receiver:
    /// the caller that serves it builds it with [`Handoff::inline`] instead.
    pub fn from_config(config: &HandoffConfig) -> Self {
        match config {
            HandoffConfig::Lambda { function } => {
                Self::Lambda { function: function.clone(), client: std::sync::Arc::new(OnceCell::new()) }
            }
            HandoffConfig::None | HandoffConfig::Inline => Self::None,
        }
    }

    /// To `function` through a given client (tests point one at a stand-in).
    pub fn lambda(function: impl Into<String>, client: aws_sdk_lambda::Client) -> Self {
        Self::Lambda { function: function.into(), client: std::sync::Arc::new(OnceCell::new_with(Some(client))) }
    }

    /// An in-process hand-off and the receiving end its server drains.
    pub fn inline() -> (Self, mpsc::UnboundedReceiver<Redrive>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self::Inline(sender), receiver)
    }

    /// Builds the Lambda client now (at cold start), so the first hand-off's
    /// 1 s budget is not spent loading the SDK's configuration.
    pub async fn prepare(&self) {
        if let Self::Lambda { client, .. } = self {
            client.get_or_init(lambda_client).await;
        }
    }

    /// Whether a hand-off carries webhook messages (the stream entry is then a safety net).
    pub fn is_on(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Sends one conversation to be answered. An error means it may not
    /// have arrived: the caller makes sure the consumer answers it.
    pub async fn send(&self, job: &Redrive) -> Result<(), HandoffError> {
        match self {
            Self::None => Err(HandoffError("no hand-off is configured".into())),
            Self::Inline(sender) => {
                sender.send(job.clone()).map_err(|_| HandoffError("the inline processor has stopped".into()))
            }
            Self::Lambda { function, client } => {
                let payload = serde_json::to_vec(job).map_err(|e| HandoffError(e.to_string()))?;
                let client = client.get_or_init(lambda_client).await;
                let invoke = client
                    .invoke()
                    .function_name(function)
                    .invocation_type(InvocationType::Event)
                    .payload(Blob::new(payload))
                    .send();
                match tokio::time::timeout(SEND_TIMEOUT, invoke).await {
                    Err(_) => Err(HandoffError("the invoke timed out".into())),
                    Ok(Err(err)) => Err(HandoffError(aws_sdk_lambda::error::DisplayErrorContext(&err).to_string())),
                    // 202 for an accepted asynchronous invocation.
                    Ok(Ok(output)) if output.status_code() / 100 == 2 => Ok(()),
                    Ok(Ok(output)) => Err(HandoffError(format!("status {}", output.status_code()))),
                }
            }
        }
    }
}

/// The Lambda client: region, credentials and endpoint from the usual AWS
/// settings (`AWS_REGION`, the function's role, `AWS_ENDPOINT_URL_LAMBDA`
/// for a local stand-in), over the SDK client every AWS call here uses.
async fn lambda_client() -> aws_sdk_lambda::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::config::secrets::http_client())
        .load()
        .await;
    aws_sdk_lambda::Client::new(&config)
}
