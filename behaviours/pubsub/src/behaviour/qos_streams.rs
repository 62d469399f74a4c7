//! The QoS protocol's streams (`/meshwire/pubsub/qos/1.0.0`, module [`crate::qos`]): one
//! frame per stream, opened without dialing; remotes' streams read with bounded frames.

use std::sync::Arc;
use std::task::Context;
use std::time::Instant;

use meshwire_core::PeerId;
use meshwire_swarm::toolkit::{with_timeout, write_frame, FrameError};
use meshwire_swarm::{InboundStream, OpenStream, Stream, StreamProtocol};

use super::{Behaviour, Counted, StreamContext};
use crate::qos::wire::{self as qos_wire, FrameLimits, QosWireError};

/// The QoS protocol's id.
pub const QOS_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshwire/pubsub/qos/1.0.0");

impl Behaviour {
    pub(super) fn qos_limits(&self) -> FrameLimits {
        let engine = self.engine.config();
        FrameLimits {
            max_frame: engine.max_transmit_size,
            max_acks: engine.qos.max_ack_batch,
            max_id_len: engine.max_message_id_len,
        }
    }

    /// A remote's QoS stream: read (one or more bounded frames) like a gossipsub stream.
    pub(super) fn on_qos_inbound(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer, mut stream, ..
        } = inbound;
        if !self.connections.is_connected(&peer) {
            stream.reset();
            return;
        }
        let token = self.qos_inbound.entry(peer).or_insert_with(|| Arc::new(()));
        if Arc::strong_count(token) > self.config.max_qos_inbound_streams_per_peer {
            tracing::debug!(%peer, "pubsub qos: too many inbound streams; reset");
            stream.reset();
            return;
        }
        let counted = Counted {
            io: stream,
            _token: token.clone(),
        };
        let max = self.config.max_transmit_size;
        if self
            .qos_readers
            .push(peer, counted, max, self.config.write_timeout)
            .is_err()
        {
            tracing::debug!(%peer, "pubsub qos: inbound stream limit reached; dropped");
        }
    }

    /// A frame (or the end of a stream) read from a remote's QoS stream.
    pub(super) fn on_qos_frame(&mut self, peer: PeerId, frame: Result<Vec<u8>, FrameError>) {
        if !self.connections.is_connected(&peer) {
            return;
        }
        let now = Instant::now();
        let error = match frame {
            Ok(body) => match qos_wire::decode_frame(&body, &self.qos_limits()) {
                Ok(frame) => {
                    self.engine.handle_qos_frame(now, peer, frame);
                    return;
                }
                Err(e) => e,
            },
            Err(FrameError::TooLarge { len, max }) => QosWireError::TooLarge { len, max },
            Err(FrameError::InvalidPrefix) => QosWireError::InvalidPrefix,
            Err(e) => {
                tracing::trace!(%peer, error = %e, "pubsub qos: inbound stream ended");
                return;
            }
        };
        tracing::debug!(%peer, %error, "pubsub qos: invalid frame");
        self.engine.handle_invalid_qos_frame(now, peer, error);
    }

    /// Moves QoS frames from the engine into new streams while writers and the outbox have
    /// room; a frame for a peer no longer connected is dropped (its retransmission rounds
    /// go on).
    pub(super) fn flush_qos(&mut self) {
        while self.engine.has_qos_transmits()
            && self.qos_writers.len() + self.qos_opening < self.config.max_qos_streams
            && self.outbox.len() + 2 < self.config.max_pending_commands
        {
            let Some((peer, frame)) = self.engine.poll_qos_transmit() else {
                break;
            };
            if !self.connections.is_connected(&peer) {
                continue;
            }
            let request = OpenStream::new(peer, QOS_PROTOCOL).no_dial();
            let body = qos_wire::encode(&frame);
            if self
                .outbox
                .open_stream(request, StreamContext::Qos(body))
                .is_ok()
            {
                self.qos_opening += 1;
            }
        }
    }

    /// Our QoS stream opened: one frame written (bounded by `write_timeout`), then closed.
    pub(super) fn on_qos_outbound(&mut self, peer: PeerId, stream: Stream, body: Vec<u8>) {
        let timeout = self.config.write_timeout;
        let write = async move {
            let mut stream = stream;
            let result = with_timeout(timeout, async {
                write_frame(&mut stream, &body).await?;
                futures::AsyncWriteExt::close(&mut stream).await?;
                Ok(())
            })
            .await;
            if result.is_err() {
                stream.reset();
            }
            result
        };
        if self.qos_writers.try_push(peer, timeout * 2, write).is_err() {
            tracing::debug!(%peer, "pubsub qos: writer limit reached; frame dropped");
        }
    }

    /// Polls the QoS writers' ends; `true` if one ended.
    pub(super) fn poll_qos_writers(&mut self, cx: &mut Context<'_>) -> bool {
        match self.qos_writers.poll_next(cx) {
            std::task::Poll::Ready((peer, result)) => {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "pubsub qos: write failed"),
                    Err(_) => tracing::debug!(%peer, "pubsub qos: write timed out"),
                }
                true
            }
            std::task::Poll::Pending => false,
        }
    }
}
