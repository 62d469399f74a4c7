//! [`ConnManagerHandle`], a cloneable thread-safe handle to a connection manager.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::{
    BumpFn, ConnManager, ConnMgrError, ConnectionId, DecayFn, Decayer, DecayingTagId, Direction,
    PeerId, TagInfo, Trimmed,
};

/// A cheap, cloneable, thread-safe handle to a connection manager: an `Arc<Mutex<M>>`.
///
/// The swarm keeps one clone (the handle itself implements [`ConnManager`] and, for
/// managers that support it, [`Decayer`], so a swarm generic over `ConnManager` can own a
/// handle) and applications keep others to tag and protect peers. Every operation locks a
/// `std::sync::Mutex` for a short, non-blocking critical section and never across an
/// `.await`, which is the recommended pattern in async code; no async runtime is needed.
/// Applications' changes are seen by the swarm at its next
/// [`handle_timeout`](ConnManager::handle_timeout) (see the crate docs on time).
///
/// The convenience methods take `&self`. A panic inside a critical section (only possible
/// from a user-supplied tag function) does not poison the handle: the lock is recovered.
///
/// **Trims through the handle close connections.** A trim decided through a handle
/// ([`trim_open_conns`](Self::trim_open_conns), or the [`ConnManager`] methods
/// `trim_open_conns` and `handle_timeout` called on a handle) forgets the trimmed
/// connections in the manager *and* queues them for the swarm holding the handle, which
/// closes them at its next poll (it is woken; [`poll_closes`](Self::poll_closes)). So the
/// manager and the swarm never disagree about which connections exist, whoever trims.
///
/// ```
/// use std::time::Instant;
/// use meshwire_connmgr::{BasicConnMgr, Config, ConnManagerHandle};
/// use meshwire_core::Keypair;
///
/// let handle = ConnManagerHandle::new(BasicConnMgr::new(Config::default(), Instant::now())?);
/// let app = handle.clone();
/// let peer = Keypair::from_seed_for_tests(7).peer_id();
/// std::thread::spawn(move || app.tag_peer(peer, "kad", 5)).join().expect("thread");
/// assert_eq!(handle.get_tag_info(peer).map(|t| t.value), Some(5));
/// # Ok::<(), meshwire_connmgr::ConnMgrError>(())
/// ```
#[derive(Debug, Default)]
pub struct ConnManagerHandle<M: ?Sized> {
    inner: Arc<Shared<M>>,
}

/// Peers whose trimmed connections wait for the swarm at most
/// ([`ConnManagerHandle::poll_closes`]).
pub const MAX_QUEUED_CLOSES: usize = 16_384;

/// What the clones of a handle share: the manager, and the closes decided through handles
/// that the swarm has not carried out yet.
#[derive(Debug, Default)]
struct Shared<M: ?Sized> {
    closes: Mutex<Closes>,
    manager: Mutex<M>,
}

#[derive(Debug, Default)]
struct Closes {
    trimmed: Trimmed,
    waker: Option<Waker>,
}

impl<M: ?Sized> Clone for ConnManagerHandle<M> {
    fn clone(&self) -> Self {
        ConnManagerHandle {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: ConnManager> ConnManagerHandle<M> {
    /// Wraps `manager` in a handle.
    pub fn new(manager: M) -> Self {
        ConnManagerHandle {
            inner: Arc::new(Shared {
                closes: Mutex::new(Closes::default()),
                manager: Mutex::new(manager),
            }),
        }
    }
}

impl<M: ConnManager + 'static> ConnManagerHandle<M> {
    /// A handle to the same manager with its type erased, as the swarm keeps it. The typed
    /// handle stays usable (for [`Decayer`] methods and inherent ones such as metrics).
    pub fn to_dyn(&self) -> DynConnManager {
        let inner: Arc<Shared<dyn ConnManager>> = self.inner.clone();
        ConnManagerHandle { inner }
    }
}

impl<M: ?Sized> ConnManagerHandle<M> {
    /// Queues `trimmed` for the swarm to close and wakes it. At most [`MAX_QUEUED_CLOSES`]
    /// peers wait (a manager no swarm polls drops the oldest): a manager serves one swarm.
    fn queue_closes(&self, trimmed: &Trimmed) {
        if trimmed.is_empty() {
            return;
        }
        let mut closes = self
            .inner
            .closes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        closes.trimmed.extend(trimmed.iter().cloned());
        let excess = closes.trimmed.len().saturating_sub(MAX_QUEUED_CLOSES);
        closes.trimmed.drain(..excess);
        if let Some(w) = closes.waker.take() {
            w.wake();
        }
    }

    /// For the swarm that owns the connections: the connections trimmed through handles
    /// since the last call, to close now; `Pending` (with `cx`'s waker kept) when there are
    /// none. Applications do not call this.
    pub fn poll_closes(&self, cx: &mut Context<'_>) -> Poll<Trimmed> {
        let mut closes = self
            .inner
            .closes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if closes.trimmed.is_empty() {
            closes.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(std::mem::take(&mut closes.trimmed))
    }
}

/// A type-erased handle to any connection manager: what the swarm holds.
pub type DynConnManager = ConnManagerHandle<dyn ConnManager>;

impl<M: ConnManager + ?Sized> ConnManagerHandle<M> {
    /// Locks the manager for direct access (inherent methods, several calls at once).
    ///
    /// Calls made on the locked manager itself go around the handle: a trim decided this way
    /// is *not* queued for the swarm (the swarm uses this for its own trims, which it closes
    /// itself). Applications trim through [`trim_open_conns`](Self::trim_open_conns).
    pub fn lock(&self) -> MutexGuard<'_, M> {
        self.inner
            .manager
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the manager locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut M) -> R) -> R {
        f(&mut self.lock())
    }

    /// See [`ConnManager::tag_peer`].
    pub fn tag_peer(&self, peer: PeerId, tag: &str, value: i32) {
        self.lock().tag_peer(peer, tag, value)
    }

    /// See [`ConnManager::untag_peer`].
    pub fn untag_peer(&self, peer: PeerId, tag: &str) {
        self.lock().untag_peer(peer, tag)
    }

    /// See [`ConnManager::upsert_tag`].
    pub fn upsert_tag(&self, peer: PeerId, tag: &str, f: &mut dyn FnMut(i32) -> i32) {
        self.lock().upsert_tag(peer, tag, f)
    }

    /// See [`ConnManager::get_tag_info`].
    pub fn get_tag_info(&self, peer: PeerId) -> Option<TagInfo> {
        self.lock().get_tag_info(peer)
    }

    /// See [`ConnManager::trim_open_conns`]. The swarm holding this manager closes the
    /// trimmed connections at its next poll.
    pub fn trim_open_conns(&self, now: Instant) -> Trimmed {
        let trimmed = self.lock().trim_open_conns(now);
        self.queue_closes(&trimmed);
        trimmed
    }

    /// See [`ConnManager::protect`].
    pub fn protect(&self, peer: PeerId, tag: &str) {
        self.lock().protect(peer, tag)
    }

    /// See [`ConnManager::unprotect`].
    pub fn unprotect(&self, peer: PeerId, tag: &str) -> bool {
        self.lock().unprotect(peer, tag)
    }

    /// See [`ConnManager::is_protected`].
    pub fn is_protected(&self, peer: PeerId, tag: Option<&str>) -> bool {
        self.lock().is_protected(peer, tag)
    }

    /// See [`ConnManager::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lock().poll_timeout()
    }
}

impl<M: Decayer + ?Sized> ConnManagerHandle<M> {
    /// See [`Decayer::register_decaying_tag`].
    pub fn register_decaying_tag(
        &self,
        name: &str,
        interval: Duration,
        decay: DecayFn,
        bump: BumpFn,
    ) -> Result<DecayingTagId, ConnMgrError> {
        self.lock()
            .register_decaying_tag(name, interval, decay, bump)
    }

    /// See [`Decayer::bump`].
    pub fn bump(&self, peer: PeerId, tag: DecayingTagId, delta: i32) -> Result<(), ConnMgrError> {
        self.lock().bump(peer, tag, delta)
    }

    /// See [`Decayer::remove_decaying`].
    pub fn remove_decaying(&self, peer: PeerId, tag: DecayingTagId) -> Result<(), ConnMgrError> {
        self.lock().remove_decaying(peer, tag)
    }

    /// See [`Decayer::close_decaying_tag`].
    pub fn close_decaying_tag(&self, tag: DecayingTagId) -> Result<(), ConnMgrError> {
        self.lock().close_decaying_tag(tag)
    }
}

impl<M: ConnManager + ?Sized> ConnManager for ConnManagerHandle<M> {
    fn tag_peer(&mut self, peer: PeerId, tag: &str, value: i32) {
        self.lock().tag_peer(peer, tag, value)
    }

    fn untag_peer(&mut self, peer: PeerId, tag: &str) {
        self.lock().untag_peer(peer, tag)
    }

    fn upsert_tag(&mut self, peer: PeerId, tag: &str, f: &mut dyn FnMut(i32) -> i32) {
        self.lock().upsert_tag(peer, tag, f)
    }

    fn get_tag_info(&self, peer: PeerId) -> Option<TagInfo> {
        self.lock().get_tag_info(peer)
    }

    fn trim_open_conns(&mut self, now: Instant) -> Trimmed {
        ConnManagerHandle::trim_open_conns(self, now)
    }

    fn notify_connected(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        direction: Direction,
        now: Instant,
    ) {
        self.lock().notify_connected(peer, conn, direction, now)
    }

    fn notify_disconnected(&mut self, peer: PeerId, conn: ConnectionId, now: Instant) {
        self.lock().notify_disconnected(peer, conn, now)
    }

    fn notify_streams(&mut self, peer: PeerId, conn: ConnectionId, streams: usize) {
        self.lock().notify_streams(peer, conn, streams)
    }

    fn protect(&mut self, peer: PeerId, tag: &str) {
        self.lock().protect(peer, tag)
    }

    fn unprotect(&mut self, peer: PeerId, tag: &str) -> bool {
        self.lock().unprotect(peer, tag)
    }

    fn is_protected(&self, peer: PeerId, tag: Option<&str>) -> bool {
        self.lock().is_protected(peer, tag)
    }

    fn close(&mut self) {
        self.lock().close()
    }

    fn handle_timeout(&mut self, now: Instant) -> Trimmed {
        let trimmed = self.lock().handle_timeout(now);
        self.queue_closes(&trimmed);
        trimmed
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.lock().poll_timeout()
    }
}

impl<M: Decayer + ?Sized> Decayer for ConnManagerHandle<M> {
    fn register_decaying_tag(
        &mut self,
        name: &str,
        interval: Duration,
        decay: DecayFn,
        bump: BumpFn,
    ) -> Result<DecayingTagId, ConnMgrError> {
        self.lock()
            .register_decaying_tag(name, interval, decay, bump)
    }

    fn bump(&mut self, peer: PeerId, tag: DecayingTagId, delta: i32) -> Result<(), ConnMgrError> {
        self.lock().bump(peer, tag, delta)
    }

    fn remove_decaying(&mut self, peer: PeerId, tag: DecayingTagId) -> Result<(), ConnMgrError> {
        self.lock().remove_decaying(peer, tag)
    }

    fn close_decaying_tag(&mut self, tag: DecayingTagId) -> Result<(), ConnMgrError> {
        self.lock().close_decaying_tag(tag)
    }
}
