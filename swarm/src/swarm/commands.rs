//! The commands of [`SwarmHandle`]s, served in the swarm's poll, and [`Swarm::spawn`].

use std::future::Future;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::Swarm;
use crate::behaviour::NetworkBehaviour;
use crate::event::SwarmEvent;
use crate::handle::{Command, SwarmHandle, EVENT_QUEUE, HANDLE_QUEUE};

/// Both ends of the handles' command channel: the swarm keeps a sender to make new handles
/// (dropped once the swarm is spawned, so the channel ends with the last handle).
pub(super) struct HandleChannel<B> {
    tx: Option<mpsc::Sender<Command<B>>>,
    rx: mpsc::Receiver<Command<B>>,
    /// Every handle is gone (only once the swarm's own sender is dropped).
    ended: bool,
}

impl<B: NetworkBehaviour> Swarm<B> {
    /// A cloneable, `Send` handle commanding this swarm from other tasks (see
    /// [`SwarmHandle`]). Commands are served while the swarm is polled, so drive it (e.g.
    /// [`Swarm::spawn`], which returns a handle too).
    pub fn handle(&mut self) -> SwarmHandle<B> {
        let channel = self.handles.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(HANDLE_QUEUE);
            HandleChannel {
                tx: Some(tx),
                rx,
                ended: false,
            }
        });
        let tx = match &channel.tx {
            Some(tx) => tx.clone(),
            // A spawned swarm is not reachable to call this; make a fresh channel anyway.
            None => {
                let (tx, rx) = mpsc::channel(HANDLE_QUEUE);
                channel.rx = rx;
                channel.ended = false;
                channel.tx = Some(tx.clone());
                tx
            }
        };
        SwarmHandle::new(tx, self.local_peer_id, self.conn_manager.clone())
    }

    /// Runs the swarm on a task of its own: returns a handle to command it and the receiver
    /// of its events (at most [`EVENT_QUEUE`](crate::handle::EVENT_QUEUE) wait; the swarm
    /// waits while the receiver lags — serving its handles' commands meanwhile — and drops
    /// events once the receiver is dropped). The task ends on [`SwarmHandle::shutdown`], or
    /// once every handle and the event receiver are dropped. Call it within a Tokio runtime.
    pub fn spawn(mut self) -> (SwarmHandle<B>, mpsc::Receiver<SwarmEvent<B::Event>>) {
        let handle = self.handle();
        if let Some(channel) = &mut self.handles {
            channel.tx = None;
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let watcher = tx.clone();
        let mut receiver_gone = Box::pin(async move { watcher.closed().await });
        tokio::spawn(async move {
            loop {
                let next = std::future::poll_fn(|cx| match self.poll_inner(cx) {
                    _ if self.shutdown => Poll::Ready(None),
                    Poll::Ready(ev) => Poll::Ready(Some(ev)),
                    // Nobody can command the swarm or hear from it any more: stop.
                    Poll::Pending
                        if self.handles_ended() && receiver_gone.as_mut().poll(cx).is_ready() =>
                    {
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                })
                .await;
                let Some(ev) = next else {
                    break;
                };
                if tx.is_closed() {
                    continue;
                }
                // While the receiver lags, the handles are still served (a caller awaiting
                // a command's answer may be the one that reads the events).
                let permit = loop {
                    tokio::select! {
                        biased;
                        permit = tx.reserve() => break permit.ok(),
                        command = std::future::poll_fn(|cx| self.poll_handles(cx)) => {
                            self.on_handle_command(command);
                            if self.shutdown {
                                break None;
                            }
                        }
                    }
                };
                match permit {
                    Some(permit) => permit.send(ev),
                    None if self.shutdown => break,
                    None => {}
                }
            }
            tracing::debug!(peer = %self.local_peer_id, "spawned swarm shut down");
        });
        (handle, rx)
    }

    /// Whether every handle of a spawned swarm is gone.
    fn handles_ended(&self) -> bool {
        self.handles.as_ref().is_some_and(|c| c.ended)
    }

    /// The next command of a handle, if one waits.
    pub(super) fn poll_handles(&mut self, cx: &mut Context<'_>) -> Poll<Command<B>> {
        match &mut self.handles {
            // Until spawned the swarm holds a sender itself, so the channel cannot end; once
            // spawned it ends with the last handle.
            Some(channel) if !channel.ended => match channel.rx.poll_recv(cx) {
                Poll::Ready(Some(command)) => Poll::Ready(command),
                Poll::Ready(None) => {
                    channel.ended = true;
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            },
            _ => Poll::Pending,
        }
    }

    pub(super) fn on_handle_command(&mut self, command: Command<B>) {
        match command {
            Command::Dial(opts, reply) => {
                let _ = reply.send(self.dial(opts));
            }
            Command::ListenOn(addr, reply) => {
                let _ = reply.send(self.listen_on(addr));
            }
            Command::RemoveListener(id, reply) => {
                let _ = reply.send(self.remove_listener(id));
            }
            Command::AddPeerAddress(peer, addr, reply) => {
                self.add_peer_address(peer, addr);
                let _ = reply.send(());
            }
            Command::AddExternalAddress(addr, reply) => {
                self.add_external_address(addr);
                let _ = reply.send(());
            }
            Command::CloseConnection(id, reply) => {
                let _ = reply.send(self.close_connection(id));
            }
            Command::CloseConnectionWithReason(id, reason, reply) => {
                let _ = reply.send(self.close_connection_with_reason(id, &reason));
            }
            Command::Disconnect(peer, reply) => {
                let _ = reply.send(self.disconnect_peer_id(peer));
            }
            Command::Connections(reply) => {
                let _ = reply.send(self.connections().collect());
            }
            Command::Listeners(reply) => {
                let _ = reply.send(self.listeners().cloned().collect());
            }
            Command::Trim(reply) => {
                let _ = reply.send(self.trim_open_conns());
            }
            Command::Behaviour(f) => f(&mut self.behaviour),
            Command::Shutdown => self.shutdown = true,
        }
    }
}
