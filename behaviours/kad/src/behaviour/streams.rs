//! Stream exchanges: our requests (one per stream), and the inbound streams being served
//! (requests read one after the other until the remote finishes the stream), run as
//! [`Tasks`] with their timeouts; [`Inbound`] keeps the per-peer bound of inbound streams.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};
use futures::io::AsyncWriteExt;
use futures::FutureExt;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{read_frame_reserved, Tasks};
use meshwire_swarm::Stream;
use multiaddr::Multiaddr;

use super::config::Error;
use crate::engine::RequestId;
use crate::protocol::{KadCodec, KadRequest, KadResponse};

/// What a stream task is, for reporting it when it times out.
#[derive(Debug, Clone, Copy)]
pub(super) enum Task {
    /// Our request's exchange.
    Outbound {
        request_id: RequestId,
        peer: PeerId,
        expects_response: bool,
    },
    /// Inbound stream `id`.
    Inbound { id: u64 },
}

/// What a finished stream task reports.
pub(super) enum Done {
    /// Our request's exchange ended.
    Outbound {
        request_id: RequestId,
        peer: PeerId,
        /// The address we dialed, if the stream's connection is one we dialed.
        addr: Option<Multiaddr>,
        expects_response: bool,
        result: Result<Option<KadResponse>, Error>,
    },
    /// An inbound stream delivered a request, ended, or failed.
    Read {
        id: u64,
        stream: Stream,
        result: Result<Option<KadRequest>, Error>,
    },
    /// Our response on an inbound stream was written (or not).
    Responded {
        id: u64,
        stream: Stream,
        result: Result<(), Error>,
    },
    /// An inbound task was aborted to make room for a newer stream.
    Aborted,
}

/// The stream tasks.
pub(super) type StreamTasks = Tasks<Task, Done>;

/// A stream request of ours waiting for the swarm.
pub(super) struct PendingRequest {
    pub peer: PeerId,
    pub request_id: RequestId,
    pub frame: Vec<u8>,
    pub expects_response: bool,
}

/// Runs our request's exchange on `stream` (opened over a connection we dialed at `addr`,
/// if we did).
pub(super) fn spawn_outbound(
    tasks: &mut StreamTasks,
    mut stream: Stream,
    request: PendingRequest,
    addr: Option<Multiaddr>,
    codec: KadCodec,
    timeout: Duration,
) -> Result<(), Error> {
    room(tasks, &mut stream)?;
    let PendingRequest {
        peer,
        request_id,
        frame,
        expects_response,
    } = request;
    let key = Task::Outbound {
        request_id,
        peer,
        expects_response,
    };
    let fut = async move {
        let result = exchange(&mut stream, &frame, expects_response, codec).await;
        if result.is_err() {
            stream.reset();
        }
        Done::Outbound {
            request_id,
            peer,
            addr,
            expects_response,
            result,
        }
    };
    tasks
        .try_push(key, timeout, fut)
        .map_err(|full| Error::TasksFull { limit: full.limit })
}

/// An inbound stream being served.
struct InboundEntry {
    peer: PeerId,
    connection: ConnectionId,
    /// It served a request and waits idle for the next one: it may be closed to make room.
    reusable: bool,
    /// Whether it served a request yet (an idle timeout afterwards is a normal end).
    served: bool,
    abort: Option<AbortHandle>,
}

/// The inbound streams being served, bounded per peer.
#[derive(Default)]
pub(super) struct Inbound {
    entries: HashMap<u64, InboundEntry>,
    per_peer: HashMap<PeerId, usize>,
    next_id: u64,
}

/// An inbound stream that ended: whose it was and whether it had served a request.
pub(super) struct Ended {
    pub peer: PeerId,
    pub connection: ConnectionId,
    pub served: bool,
}

impl Inbound {
    /// Number of inbound streams.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Admits a new stream of `peer`, closing the peer's oldest idle stream if it has `limit`
    /// open; with `total` streams open in all, closing the oldest stream (an idle one first)
    /// of the peer holding the most, if that is not `peer` itself.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyStreams`] if the peer has `limit` streams and none idle, or `total`
    /// are open and `peer` holds the most.
    pub fn admit(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        limit: usize,
        total: usize,
    ) -> Result<u64, Error> {
        if self.entries.len() >= total && self.per_peer.get(&peer).copied().unwrap_or(0) < limit {
            let own = self.per_peer.get(&peer).copied().unwrap_or(0);
            let heaviest = self
                .per_peer
                .iter()
                .max_by_key(|(p, n)| (**n, **p))
                .map(|(p, n)| (*p, *n));
            match heaviest {
                Some((victim, n)) if n > own + 1 => {
                    let oldest = self
                        .entries
                        .iter()
                        .filter(|(_, e)| e.peer == victim)
                        .map(|(id, e)| (!e.reusable, *id))
                        .min()
                        .map(|(_, id)| id);
                    if let Some(old) = oldest {
                        tracing::debug!(%peer, heaviest = %victim, "kad: inbound stream limit reached; closing a stream of the peer holding the most");
                        self.end(old);
                    }
                }
                _ => return Err(Error::TooManyStreams { limit: total }),
            }
        }
        let open = self.per_peer.get(&peer).copied().unwrap_or(0);
        if open >= limit {
            // Make room by closing this peer's oldest stream that waits idle to be reused.
            let idle = self
                .entries
                .iter()
                .filter(|(_, e)| e.peer == peer && e.reusable)
                .map(|(id, _)| *id)
                .min();
            let Some(old) = idle else {
                return Err(Error::TooManyStreams { limit });
            };
            tracing::debug!(%peer, "kad: inbound stream limit reached; closing an idle stream");
            self.end(old);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.insert(
            id,
            InboundEntry {
                peer,
                connection,
                reusable: false,
                served: false,
                abort: None,
            },
        );
        *self.per_peer.entry(peer).or_default() += 1;
        Ok(id)
    }

    /// Forgets stream `id` (aborting its task).
    pub fn end(&mut self, id: u64) -> Option<Ended> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&entry.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&entry.peer);
            }
        }
        if let Some(abort) = entry.abort {
            abort.abort();
        }
        Some(Ended {
            peer: entry.peer,
            connection: entry.connection,
            served: entry.served,
        })
    }

    /// Forgets stream `id` whose task has finished (nothing to abort).
    pub fn finished(&mut self, id: u64) -> Option<Ended> {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.abort = None;
        }
        self.end(id)
    }

    /// Whether stream `id` is still served.
    pub fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// Stream `id` delivered a request: its peer (`None` for a forgotten stream).
    pub fn serving(&mut self, id: u64) -> Option<PeerId> {
        let entry = self.entries.get_mut(&id)?;
        entry.served = true;
        entry.reusable = false;
        Some(entry.peer)
    }

    /// Runs `fut` as stream `id`'s task, abortable through its entry; a stream waiting for a
    /// next request after serving one may be closed to make room.
    fn spawn(
        &mut self,
        tasks: &mut StreamTasks,
        id: u64,
        timeout: Duration,
        fut: impl Future<Output = Done> + Send + 'static,
        idle: bool,
    ) -> Result<(), Error> {
        let (abort, registration) = AbortHandle::new_pair();
        let fut = Abortable::new(fut, registration).map(|r| r.unwrap_or(Done::Aborted));
        tasks
            .try_push(Task::Inbound { id }, timeout, fut)
            .map_err(|full| Error::TasksFull { limit: full.limit })?;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.abort = Some(abort);
            entry.reusable = idle && entry.served;
        }
        Ok(())
    }

    /// Reads the next request of stream `id`.
    pub fn read_next(
        &mut self,
        tasks: &mut StreamTasks,
        id: u64,
        mut stream: Stream,
        codec: KadCodec,
        timeout: Duration,
    ) -> Result<(), Error> {
        room(tasks, &mut stream)?;
        let fut = async move {
            let result = read_request(&mut stream, codec).await;
            Done::Read { id, stream, result }
        };
        self.spawn(tasks, id, timeout, fut, true)
    }

    /// Writes `frame` (our response) on stream `id`.
    pub fn respond(
        &mut self,
        tasks: &mut StreamTasks,
        id: u64,
        mut stream: Stream,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), Error> {
        room(tasks, &mut stream)?;
        let fut = async move {
            let result = write(&mut stream, &frame).await;
            Done::Responded { id, stream, result }
        };
        self.spawn(tasks, id, timeout, fut, false)
    }
}

/// Whether `tasks` has room for one more exchange; if not, `stream` is reset.
fn room(tasks: &StreamTasks, stream: &mut Stream) -> Result<(), Error> {
    if tasks.has_room() {
        return Ok(());
    }
    stream.reset();
    Err(Error::TasksFull {
        limit: tasks.limit(),
    })
}

/// Writes `frame` and flushes.
async fn write(stream: &mut Stream, frame: &[u8]) -> Result<(), Error> {
    stream.write_all(frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Our side of one request: write it, then read the response (none for one-way requests,
/// whose stream is finished instead).
async fn exchange(
    stream: &mut Stream,
    frame: &[u8],
    expects_response: bool,
    codec: KadCodec,
) -> Result<Option<KadResponse>, Error> {
    stream.write_all(frame).await?;
    if !expects_response {
        // Finishing does not wait for the remote's (lazy) protocol confirmation: the dropped
        // stream is drained until the remote's end (`meshwire_swarm::stream` drop rule), so a
        // remote that confirms late still writes its confirmation and reads the request.
        stream.close().await?;
        return Ok(None);
    }
    stream.flush().await?;
    // The frame counts against the peer's and the protocol's memory while it is decoded.
    let Some((body, _reserved)) = read_frame_reserved(stream, codec.max_message_size()).await?
    else {
        return Err(Error::NoResponse);
    };
    let response = codec.decode_response_body(&body)?;
    // Best effort: the exchange is complete whatever the finish does.
    let _ = stream.close().await;
    Ok(Some(response))
}

/// Reads the next request of an inbound stream; `None` when the remote finished the stream.
async fn read_request(stream: &mut Stream, codec: KadCodec) -> Result<Option<KadRequest>, Error> {
    match read_frame_reserved(stream, codec.max_message_size()).await? {
        Some((body, _reserved)) => Ok(Some(codec.decode_request_body(&body)?)),
        None => Ok(None),
    }
}
