//! What the behaviour reports: [`Event`], [`Message`], the request ids and
//! [`ResponseChannel`].

use std::fmt;

use futures::channel::oneshot;
use meshwire_swarm::{ConnectionId, PeerId};

use crate::error::{InboundFailure, OutboundFailure};

/// Identifies one of our requests, from [`send_request`](crate::Behaviour::send_request) to
/// its event. Unique within a behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundRequestId(pub(crate) u64);

/// Identifies a remote's request, from its [`Message::Request`] to its
/// [`Event::ResponseSent`] or [`Event::InboundFailure`]. Unique within a behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundRequestId(pub(crate) u64);

impl fmt::Display for OutboundRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "outbound-request#{}", self.0)
    }
}

impl fmt::Display for InboundRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inbound-request#{}", self.0)
    }
}

/// A request or a response.
#[derive(Debug)]
pub enum Message<Req, Resp, U = ()> {
    /// A remote's request. Answer it with
    /// [`send_response(channel, ..)`](crate::Behaviour::send_response) within the request
    /// timeout; dropping `channel` instead resets the remote's stream and is reported as
    /// [`InboundFailure::ResponseOmission`].
    Request {
        /// The request's id.
        request_id: InboundRequestId,
        /// The request.
        request: Req,
        /// Where the response goes.
        channel: ResponseChannel<Resp>,
    },
    /// The response to one of our requests.
    Response {
        /// The id [`send_request`](crate::Behaviour::send_request) returned.
        request_id: OutboundRequestId,
        /// The response.
        response: Resp,
        /// What was given with the request.
        user_data: U,
    },
}

/// What a request-response behaviour reports. `U` is the user data carried with each of
/// our requests (`()` unless [`send_request_with`](crate::Behaviour::send_request_with) is
/// used); it comes back with the request's one final event, [`Message::Response`] or
/// [`Event::OutboundFailure`].
#[derive(Debug)]
pub enum Event<Req, Resp, U = ()> {
    /// A request or a response arrived.
    Message {
        /// The remote.
        peer: PeerId,
        /// The connection it came on.
        connection: ConnectionId,
        /// The message.
        message: Message<Req, Resp, U>,
    },
    /// One of our requests failed.
    OutboundFailure {
        /// The peer it was for.
        peer: PeerId,
        /// The connection its stream was on, if it got one.
        connection: Option<ConnectionId>,
        /// The id [`send_request`](crate::Behaviour::send_request) returned.
        request_id: OutboundRequestId,
        /// Why.
        error: OutboundFailure,
        /// What was given with the request.
        user_data: U,
    },
    /// A remote's request failed: it could not be read, or our response could not be
    /// written. Failures before a [`Message::Request`] (the request too large or malformed,
    /// or not read in time) carry an id no `Message` had.
    InboundFailure {
        /// The remote.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// The request's id.
        request_id: InboundRequestId,
        /// Why.
        error: InboundFailure,
    },
    /// Our response to a remote's request was written and the stream closed.
    ResponseSent {
        /// The remote.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// The request's id.
        request_id: InboundRequestId,
    },
}

/// Where the response to a remote's request goes: pass it to
/// [`Behaviour::send_response`](crate::Behaviour::send_response). Dropping it answers
/// nothing: the remote's stream is reset and [`InboundFailure::ResponseOmission`] reported.
pub struct ResponseChannel<Resp> {
    pub(crate) sender: oneshot::Sender<Resp>,
}

impl<Resp> ResponseChannel<Resp> {
    /// Answers the request with `response`: the same as
    /// [`Behaviour::send_response`](crate::Behaviour::send_response), for code that does
    /// not hold the behaviour (another task, an event conversion). The swarm writes the
    /// response at its next poll.
    ///
    /// # Errors
    ///
    /// `Err(response)` if the exchange no longer waits for it (it timed out or its
    /// connection closed; its [`Event::InboundFailure`] says which).
    pub fn send(self, response: Resp) -> Result<(), Resp> {
        self.sender.send(response)
    }

    /// Whether the exchange still waits for the response (false once it timed out or its
    /// connection closed).
    pub fn is_open(&self) -> bool {
        !self.sender.is_canceled()
    }
}

impl<Resp> fmt::Debug for ResponseChannel<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseChannel")
            .field("open", &self.is_open())
            .finish()
    }
}
