//! [`NullConnMgr`], the connection manager that manages nothing.

use std::time::Instant;

use crate::{ConnManager, ConnectionId, Direction, PeerId, TagInfo, Trimmed};

/// A connection manager that does nothing, like go-libp2p's `NullConnMgr`: it records no
/// tags ([`get_tag_info`](ConnManager::get_tag_info) is always `None`), protection has no
/// effect ([`is_protected`](ConnManager::is_protected) and
/// [`unprotect`](ConnManager::unprotect) always return `false`), it never trims and never
/// needs a timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NullConnMgr;

impl ConnManager for NullConnMgr {
    fn tag_peer(&mut self, _peer: PeerId, _tag: &str, _value: i32) {}

    fn untag_peer(&mut self, _peer: PeerId, _tag: &str) {}

    fn upsert_tag(&mut self, _peer: PeerId, _tag: &str, _f: &mut dyn FnMut(i32) -> i32) {}

    fn get_tag_info(&self, _peer: PeerId) -> Option<TagInfo> {
        None
    }

    fn trim_open_conns(&mut self, _now: Instant) -> Trimmed {
        Vec::new()
    }

    fn notify_connected(
        &mut self,
        _peer: PeerId,
        _conn: ConnectionId,
        _direction: Direction,
        _now: Instant,
    ) {
    }

    fn notify_disconnected(&mut self, _peer: PeerId, _conn: ConnectionId, _now: Instant) {}

    fn notify_streams(&mut self, _peer: PeerId, _conn: ConnectionId, _streams: usize) {}

    fn protect(&mut self, _peer: PeerId, _tag: &str) {}

    fn unprotect(&mut self, _peer: PeerId, _tag: &str) -> bool {
        false
    }

    fn is_protected(&self, _peer: PeerId, _tag: Option<&str>) -> bool {
        false
    }

    fn close(&mut self) {}

    fn handle_timeout(&mut self, _now: Instant) -> Trimmed {
        Vec::new()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
