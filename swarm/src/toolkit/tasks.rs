//! [`Tasks`]: a bounded set of keyed futures, each with a timeout.

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::Timeout;

/// The set already holds its limit of tasks; the refused key is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task limit of {limit} reached")]
pub struct TasksFull<K> {
    /// The limit.
    pub limit: usize,
    /// The key of the refused task.
    pub key: K,
}

/// A bounded set of futures (a behaviour's stream exchanges), each with a key and its own
/// timeout, polled from the behaviour's `poll`. Finished tasks come out as
/// `(key, Ok(output))`, timed-out ones as `(key, Err(Timeout))` (their future is dropped,
/// which ends its stream).
///
/// The set remembers the waker of its last `Pending` poll and wakes it when a task is added,
/// so a task added from outside the swarm's poll (e.g. through `Swarm::behaviour_mut`) runs
/// without the behaviour keeping a waker of its own.
///
/// ```
/// use std::time::Duration;
/// use meshwire_swarm::toolkit::{Tasks, Timeout};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut tasks: Tasks<&str, u32> = Tasks::new(2);
/// tasks.try_push("fast", Duration::from_secs(1), async { 7 }).unwrap();
/// tasks.try_push("slow", Duration::from_millis(10), std::future::pending()).unwrap();
/// // The set is full: a third task is refused, with its key.
/// assert_eq!(tasks.try_push("third", Duration::from_secs(1), async { 0 }).unwrap_err().key, "third");
/// let first = std::future::poll_fn(|cx| tasks.poll_next(cx)).await;
/// assert_eq!(first, ("fast", Ok(7)));
/// let second = std::future::poll_fn(|cx| tasks.poll_next(cx)).await;
/// assert_eq!(second, ("slow", Err(Timeout(Duration::from_millis(10)))));
/// # }
/// ```
pub struct Tasks<K, T> {
    futures: FuturesUnordered<BoxFuture<'static, (K, Result<T, Timeout>)>>,
    limit: usize,
    waker: Option<Waker>,
}

impl<K, T> fmt::Debug for Tasks<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks")
            .field("len", &self.futures.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl<K, T> Default for Tasks<K, T>
where
    K: Send + 'static,
    T: Send + 'static,
{
    /// A set with [`Tasks::DEFAULT_LIMIT`].
    fn default() -> Self {
        Tasks::new(Self::DEFAULT_LIMIT)
    }
}

impl<K, T> Tasks<K, T>
where
    K: Send + 'static,
    T: Send + 'static,
{
    /// The limit of [`Tasks::default`]: 256 tasks.
    pub const DEFAULT_LIMIT: usize = 256;

    /// An empty set holding at most `limit` tasks at once.
    pub fn new(limit: usize) -> Self {
        Tasks {
            futures: FuturesUnordered::new(),
            limit,
            waker: None,
        }
    }

    /// Adds `fut` under `key`; it is dropped and reported as timed out after `timeout`.
    ///
    /// # Errors
    ///
    /// [`TasksFull`] (with `key`) if the set holds its limit; `fut` is dropped.
    pub fn try_push<F>(&mut self, key: K, timeout: Duration, fut: F) -> Result<(), TasksFull<K>>
    where
        F: Future<Output = T> + Send + 'static,
    {
        if self.futures.len() >= self.limit {
            return Err(TasksFull {
                limit: self.limit,
                key,
            });
        }
        self.futures.push(
            async move {
                match tokio::time::timeout(timeout, fut).await {
                    Ok(out) => (key, Ok(out)),
                    Err(_) => (key, Err(Timeout(timeout))),
                }
            }
            .boxed(),
        );
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// The next finished or timed-out task; `Pending` (with the waker kept) when none is
    /// ready, also when the set is empty.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(K, Result<T, Timeout>)> {
        match self.futures.poll_next_unpin(cx) {
            Poll::Ready(Some(out)) => Poll::Ready(out),
            Poll::Ready(None) | Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Tasks running.
    pub fn len(&self) -> usize {
        self.futures.len()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    /// Whether one more task would be accepted.
    pub fn has_room(&self) -> bool {
        self.futures.len() < self.limit
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<K, R, E> Tasks<K, Result<R, E>>
where
    K: Send + 'static,
    R: Send + 'static,
    E: From<Timeout> + Send + 'static,
{
    /// [`poll_next`](Self::poll_next) for fallible tasks, with a timeout folded into the
    /// task's own error type.
    pub fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<(K, Result<R, E>)> {
        self.poll_next(cx)
            .map(|(key, out)| (key, out.map_err(E::from).and_then(|r| r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn push_wakes_the_last_poller() {
        let mut tasks: Tasks<u8, ()> = Tasks::new(4);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(tasks.poll_next(&mut cx).is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        tasks.try_push(1, Duration::from_secs(1), async {}).unwrap();
        assert!(flag.0.load(Ordering::SeqCst));
        assert_eq!(tasks.poll_next(&mut cx), Poll::Ready((1, Ok(()))));
    }

    #[tokio::test]
    async fn poll_result_folds_the_timeout_into_the_error() {
        let mut tasks: Tasks<u8, Result<(), Timeout>> = Tasks::new(1);
        let limit = Duration::from_millis(5);
        tasks.try_push(1, limit, std::future::pending()).unwrap();
        let out = std::future::poll_fn(|cx| tasks.poll_result(cx)).await;
        assert_eq!(out, (1, Err(Timeout(limit))));
    }

    #[tokio::test]
    async fn limit_frees_when_tasks_finish() {
        let mut tasks: Tasks<u8, ()> = Tasks::new(1);
        tasks.try_push(1, Duration::from_secs(1), async {}).unwrap();
        assert!(!tasks.has_room());
        assert!(tasks.try_push(2, Duration::from_secs(1), async {}).is_err());
        let done = std::future::poll_fn(|cx| tasks.poll_next(cx)).await;
        assert_eq!(done, (1, Ok(())));
        assert!(tasks.has_room());
        tasks.try_push(3, Duration::from_secs(1), async {}).unwrap();
        assert_eq!(tasks.len(), 1);
    }
}
