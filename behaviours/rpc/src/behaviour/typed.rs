//! The typed layer (feature `serde`): handlers and calls on serde types, JSON payloads.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Behaviour, HandlerId, PendingCall, RegisterError};
use crate::engine::{CallError, CallOpts};
use crate::name::ProcedureName;

/// Why a typed call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedCallError {
    /// The call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The argument could not be encoded (nothing was sent).
    #[error("argument cannot be encoded: {0}")]
    Encode(String),
    /// The result is not the expected type.
    #[error("result does not decode: {0}")]
    Decode(String),
}

/// A typed call's result as a future ([`Behaviour::call_typed`]).
#[derive(Debug)]
pub struct TypedCall<Resp> {
    inner: Result<PendingCall, Option<TypedCallError>>,
    _resp: PhantomData<fn() -> Resp>,
}

impl<Resp: DeserializeOwned> Future for TypedCall<Resp> {
    type Output = Result<Resp, TypedCallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            Ok(pending) => match Pin::new(pending).poll(cx) {
                Poll::Ready(Ok(bytes)) => Poll::Ready(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| TypedCallError::Decode(e.to_string())),
                ),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            },
            Err(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or(TypedCallError::Call(CallError::Dropped)))),
        }
    }
}

impl Behaviour {
    /// [`register`](Self::register) with a handler on serde types: the payload is the
    /// JSON of `Req`, the result the JSON of `Resp`. An argument that does not decode is
    /// the handler's error (`RemoteError::Handler("bad argument: ..")`).
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub fn register_typed<Req, Resp, F, Fut>(
        &mut self,
        name: ProcedureName,
        handler: F,
    ) -> Result<HandlerId, RegisterError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, String>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.register(name, move |payload: Vec<u8>| {
            let handler = handler.clone();
            async move {
                let request: Req =
                    serde_json::from_slice(&payload).map_err(|e| format!("bad argument: {e}"))?;
                let response = handler(request).await?;
                serde_json::to_vec(&response).map_err(|e| format!("result cannot be encoded: {e}"))
            }
        })
    }

    /// [`call_async`](Self::call_async) on serde types (JSON payloads).
    pub fn call_typed<Req, Resp>(
        &mut self,
        name: ProcedureName,
        request: &Req,
        opts: CallOpts,
    ) -> TypedCall<Resp>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let inner = match serde_json::to_vec(request) {
            Ok(payload) => Ok(self.call_async(name, payload, opts)),
            Err(e) => Err(Some(TypedCallError::Encode(e.to_string()))),
        };
        TypedCall {
            inner,
            _resp: PhantomData,
        }
    }
}
