//! Closing: what follows a connection's close, the connection manager's trims and the idle
//! rule (see the crate docs), each with its [`Timer`](crate::Timer).

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use meshwire_connmgr::ConnManager;
use meshwire_core::ConnectionId;
use meshwire_transport::CloseReason;

use super::Swarm;
use crate::behaviour::{FromSwarm, NetworkBehaviour};
use crate::event::{ConnectionCloseCause, SwarmEvent};

impl<B: NetworkBehaviour> Swarm<B> {
    /// Connection `id` closed, for `reason` unless we closed it.
    pub(super) fn on_closed(&mut self, id: ConnectionId, reason: CloseReason) {
        self.conn_scopes.remove(&id);
        let Some((c, remaining)) = self.pool.remove(id) else {
            return;
        };
        let peer = c.peer;
        let cause = c.closing.unwrap_or(ConnectionCloseCause::Transport(reason));
        tracing::debug!(connection = %id, %peer, %cause, "connection closed");
        self.metrics.connections.dec();
        self.metrics.connections_closed.inc();
        match cause {
            ConnectionCloseCause::Trimmed => {
                self.metrics.connections_trimmed.inc();
            }
            ConnectionCloseCause::Idle => {
                self.metrics.connections_idle_closed.inc();
            }
            _ => {}
        }
        self.conn_manager
            .notify_disconnected(peer, id, Instant::now());
        self.behaviour.on_swarm_event(FromSwarm::ConnectionClosed {
            peer,
            connection: id,
            endpoint: &c.endpoint,
            remaining_established: remaining,
            cause: &cause,
        });
        self.events.push_back(SwarmEvent::ConnectionClosed {
            peer_id: peer,
            connection_id: id,
            endpoint: c.endpoint,
            num_established: u32::try_from(remaining).unwrap_or(u32::MAX),
            cause,
        });
        self.dial_for_waiting(peer);
    }

    /// Runs a trim of the connection manager, explicit (`TrimOpenConns`) or the one due by
    /// its timeout, and closes what it selects.
    pub(super) fn run_trim(&mut self, explicit: bool) {
        let now = Instant::now();
        // On the manager itself, not through the handle: the swarm closes what it trims here,
        // so nothing is queued for it (see `ConnManagerHandle::poll_closes`).
        let trimmed = if explicit {
            self.conn_manager.with(|m| m.trim_open_conns(now))
        } else {
            self.conn_manager.with(|m| m.handle_timeout(now))
        };
        self.close_trimmed(trimmed);
        self.arm_cm_timer();
    }

    /// Closes the connections a trim selected (ours, or one an application ran through the
    /// connection manager's handle).
    pub(super) fn close_trimmed(&mut self, trimmed: meshwire_connmgr::Trimmed) {
        for (peer, conns) in trimmed {
            tracing::debug!(%peer, connections = conns.len(), "connection manager trims peer");
            for id in conns {
                self.pool.close(id, ConnectionCloseCause::Trimmed);
            }
        }
    }

    /// Sets the connection manager's timer to its [`ConnManager::poll_timeout`].
    pub(super) fn arm_cm_timer(&mut self) {
        self.cm_at = self
            .conn_manager
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
    }

    /// Period of the housekeeping check (idle rule, stream counts for the connection
    /// manager): a quarter of the idle timeout, clamped to 10 ms–1 s; 1 s without one.
    fn idle_tick(&self) -> Duration {
        self.config
            .idle_connection_timeout
            .map_or(Duration::from_secs(1), |t| {
                (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
            })
    }

    /// Makes sure the idle check runs within one tick.
    pub(super) fn arm_idle_timer(&mut self) {
        let at = tokio::time::Instant::now() + self.idle_tick();
        self.idle_at = Some(self.idle_at.map_or(at, |t| t.min(at)));
    }

    /// The idle rule: closes the connections nothing kept alive for the idle timeout, and
    /// reports stream counts to the connection manager.
    fn check_idle(&mut self) {
        let behaviour = &self.behaviour;
        let cm = &self.conn_manager;
        let idle = self.pool.idle_connections(
            Instant::now(),
            self.config.idle_connection_timeout,
            |peer, id| behaviour.connection_keep_alive(peer, id) || cm.is_protected(peer, None),
            |peer, id, streams| cm.with(|m| m.notify_streams(peer, id, streams)),
        );
        for id in idle {
            self.pool.close(id, ConnectionCloseCause::Idle);
        }
        self.idle_at = if self.pool.len() == 0 {
            None
        } else {
            Some(tokio::time::Instant::now() + self.idle_tick())
        };
    }

    /// Runs the trim or the idle check that is due; `Pending` when neither is.
    pub(super) fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.cm_timer.poll_at(self.cm_at, cx).is_ready() {
            self.cm_at = None;
            self.run_trim(false);
            return Poll::Ready(());
        }
        if self.idle_timer.poll_at(self.idle_at, cx).is_ready() {
            self.idle_at = None;
            self.check_idle();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
