//! The engine's outstanding requests: what each is for, and when it times out.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use meshwire_core::PeerId;

use super::event::RequestId;
use crate::query::QueryId;

/// What an outstanding request is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RequestKind {
    Query(QueryId),
    /// Liveness ping of a full bucket's least recently seen peer.
    Ping,
    /// PUT_VALUE caching a record after a GET_VALUE.
    Cache,
}

/// A request awaiting its outcome.
#[derive(Debug)]
pub(crate) struct Outstanding {
    pub peer: PeerId,
    pub kind: RequestKind,
    deadline: Instant,
}

/// The requests awaiting their outcome, with their deadlines.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    map: HashMap<RequestId, Outstanding>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    next_id: u64,
}

impl Requests {
    /// A fresh request id.
    pub fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Awaits the outcome of request `id` until `deadline`.
    pub fn track(&mut self, id: RequestId, peer: PeerId, kind: RequestKind, deadline: Instant) {
        self.map.insert(
            id,
            Outstanding {
                peer,
                kind,
                deadline,
            },
        );
        self.deadlines.insert((deadline, id));
    }

    /// Stops awaiting request `id`.
    pub fn take(&mut self, id: RequestId) -> Option<Outstanding> {
        let out = self.map.remove(&id)?;
        self.deadlines.remove(&(out.deadline, id));
        Some(out)
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// A request whose deadline is at or before `now`, no longer awaited.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(RequestId, Outstanding)> {
        loop {
            let &(t, id) = self.deadlines.first()?;
            if t > now {
                return None;
            }
            self.deadlines.remove(&(t, id));
            if let Some(out) = self.map.remove(&id) {
                return Some((id, out));
            }
        }
    }

    /// Number of requests awaited.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}
