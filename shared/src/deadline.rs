//! The invocation's deadline, where there is one: a Lambda invocation ends
//! at a fixed time (the HTTP functions' from the event's context, the
//! consumer's from its own drain budget) and work cut off there is worse
//! than work never started — an AI round cut off mid-way is paid for and
//! lost, a send cut off mid-way has an unknown outcome. The entry points
//! run each request inside [`within`]; the pipeline asks [`remaining`]
//! before it starts a round it might not finish. A task-local rather than
//! a parameter: it crosses every floor between the entry point and the
//! pipeline without each signature on the way carrying it.

use std::{
    future::Future,
    time::{Duration, Instant},
};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline` as the invocation's deadline (`None`: none
/// known, as in the local gateway and the tests).
pub async fn within<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, work).await,
        None => work.await,
    }
}

/// The invocation's deadline, to carry into a task spawned for it (a
/// task-local does not follow `tokio::spawn`).
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Time left before the invocation's deadline; `None` when there is none.
pub fn remaining() -> Option<Duration> {
    DEADLINE.try_with(|deadline| deadline.saturating_duration_since(Instant::now())).ok()
}

/// Whether `needed` fits before the deadline (always, when there is none).
pub fn allows(needed: Duration) -> bool {
    remaining().is_none_or(|left| left >= needed)
}

/// A deadline given as epoch milliseconds (Lambda's context), as an
/// `Instant`; `None` when it is already past or implausibly far (a local
/// emulator's placeholder), so nothing is cut short by a bogus value.
pub fn from_epoch_ms(deadline_ms: u64, now_ms: u64) -> Option<Instant> {
    let left = Duration::from_millis(deadline_ms.checked_sub(now_ms)?);
    (left > Duration::ZERO && left <= Duration::from_secs(15 * 60)).then(|| Instant::now() + left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remaining_time_is_known_only_inside_a_deadline() {
        assert_eq!(remaining(), None);
        assert!(allows(Duration::from_secs(3600)));
        within(Some(Instant::now() + Duration::from_secs(10)), async {
            let left = remaining().unwrap();
            assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(5));
            assert!(allows(Duration::from_secs(1)));
            assert!(!allows(Duration::from_secs(11)));
        })
        .await;
    }

    #[test]
    fn a_past_or_implausible_lambda_deadline_is_ignored() {
        assert!(from_epoch_ms(1_000, 2_000).is_none());
        assert!(from_epoch_ms(2_000, 2_000).is_none());
        assert!(from_epoch_ms(u64::MAX, 2_000).is_none());
        assert!(from_epoch_ms(62_000, 2_000).is_some());
    }
}
