//! [`Timer`], the one reusable deadline a behaviour usually needs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// One tokio `Sleep`, moved to whatever deadline the behaviour's state asks for next, so a
/// behaviour's `poll` can wake for its earliest timer without allocating per deadline.
///
/// ```
/// use std::time::Duration;
/// use meshwire_swarm::Timer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut timer = Timer::default();
/// let start = tokio::time::Instant::now();
/// let due = start + Duration::from_millis(20);
/// // In a behaviour this is a step of `poll`: the waker is registered until `due`.
/// std::future::poll_fn(|cx| timer.poll_at(Some(due), cx)).await;
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    /// `Ready` once `at` has passed; otherwise `Pending` with `cx`'s waker registered for
    /// `at`. `None` disarms the timer (and is always `Pending`).
    pub fn poll_at(&mut self, at: Option<Instant>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = at else {
            self.sleep = None;
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        sleep.as_mut().poll(cx)
    }
}
