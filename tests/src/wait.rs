//! Waiting for something to happen, with a deadline and a message that says what did not.

use std::time::{Duration, Instant};

/// Polls `check` every 250 ms until it returns `Some`; panics with "timed out waiting for
/// {what}" once `within` has passed.
pub async fn until<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
