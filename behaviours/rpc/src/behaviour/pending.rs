//! [`PendingCall`]: a call's result as a future (fire and collect).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::oneshot;

use crate::engine::CallError;

/// The result of a call made with [`Behaviour::call_async`](crate::Behaviour::call_async):
/// await it on any task. Dropping it does not cancel the call; its result is discarded.
#[derive(Debug)]
pub struct PendingCall {
    state: State,
}

#[derive(Debug)]
enum State {
    Waiting(oneshot::Receiver<Result<Vec<u8>, CallError>>),
    Done(Option<Result<Vec<u8>, CallError>>),
}

impl PendingCall {
    pub(crate) fn waiting(rx: oneshot::Receiver<Result<Vec<u8>, CallError>>) -> Self {
        PendingCall {
            state: State::Waiting(rx),
        }
    }

    pub(crate) fn done(result: Result<Vec<u8>, CallError>) -> Self {
        PendingCall {
            state: State::Done(Some(result)),
        }
    }
}

impl Future for PendingCall {
    type Output = Result<Vec<u8>, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(r)) => Poll::Ready(r),
                // The behaviour went away.
                Poll::Ready(Err(_)) => Poll::Ready(Err(CallError::Dropped)),
                Poll::Pending => Poll::Pending,
            },
            State::Done(r) => Poll::Ready(r.take().unwrap_or(Err(CallError::Dropped))),
        }
    }
}
