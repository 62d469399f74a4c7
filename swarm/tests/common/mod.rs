//! A test harness: swarms on real QUIC loopback, each driven by its own task, with a
//! behaviour that hands raw streams to the test.

#![allow(dead_code)]

use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_swarm::connmgr::DynConnManager;
use meshwire_swarm::{
    DialOpts, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult, StreamProtocol,
    Swarm, SwarmConfig, SwarmEvent, SwarmMetrics, ToSwarm,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Multiaddr;
use tokio::sync::{mpsc, oneshot};

/// Hands every inbound stream and outbound result to the test; opens what the test asks.
pub struct Streams {
    protocols: Vec<StreamProtocol>,
    requests: mpsc::UnboundedReceiver<ToSwarm<()>>,
    inbound: mpsc::UnboundedSender<InboundStream>,
    outbound: mpsc::UnboundedSender<OutboundStreamResult>,
}

impl NetworkBehaviour for Streams {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        self.protocols.clone()
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        let _ = self.inbound.send(stream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let _ = self.outbound.send(result);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        match self.requests.poll_recv(cx) {
            Poll::Ready(Some(cmd)) => Poll::Ready(cmd),
            _ => Poll::Pending,
        }
    }
}

/// What the test asks a node's driver task to do.
pub enum Command {
    Dial(DialOpts, oneshot::Sender<Result<ConnectionId, String>>),
    Close(ConnectionId),
    AddPeerAddress(PeerId, Multiaddr),
    Connections(oneshot::Sender<Vec<(ConnectionId, PeerId)>>),
    Trim(oneshot::Sender<usize>),
    Stop,
}

/// One swarm running in its own task.
pub struct Node {
    pub peer: PeerId,
    pub addr: Multiaddr,
    pub cm: DynConnManager,
    pub metrics: SwarmMetrics,
    /// Commands the node's behaviour returns from `poll`.
    pub requests: mpsc::UnboundedSender<ToSwarm<()>>,
    pub inbound: mpsc::UnboundedReceiver<InboundStream>,
    pub outbound: mpsc::UnboundedReceiver<OutboundStreamResult>,
    pub events: mpsc::UnboundedReceiver<SwarmEvent<()>>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub task: tokio::task::JoinHandle<()>,
}

pub const T: Duration = Duration::from_secs(10);

impl Node {
    pub async fn start(protocols: &[&'static str], config: SwarmConfig) -> Node {
        Self::start_with(protocols, config, None).await
    }

    pub async fn start_with(
        protocols: &[&'static str],
        config: SwarmConfig,
        cm: Option<DynConnManager>,
    ) -> Node {
        let key = Keypair::generate();
        let peer = key.peer_id();
        let transport = QuicTransport::new(key, QuicConfig::default()).expect("transport");
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let behaviour = Streams {
            protocols: protocols.iter().map(|p| StreamProtocol::new(p)).collect(),
            requests: req_rx,
            inbound: in_tx,
            outbound: out_tx,
        };
        let mut swarm = match cm {
            Some(cm) => Swarm::with_conn_manager(transport, behaviour, config, cm),
            None => Swarm::new(transport, behaviour, config),
        };
        let cm = swarm.conn_manager().clone();
        let metrics = swarm.register_metrics(&mut prometheus_client::registry::Registry::default());
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .expect("listen");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
                break address;
            }
        };
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => { let _ = ev_tx.send(ev); }
                    cmd = cmd_rx.recv() => match cmd {
                        Some(Command::Dial(opts, reply)) => {
                            let _ = reply.send(swarm.dial(opts).map_err(|e| e.to_string()));
                        }
                        Some(Command::Close(id)) => { swarm.close_connection(id); }
                        Some(Command::AddPeerAddress(p, a)) => swarm.add_peer_address(p, a),
                        Some(Command::Connections(reply)) => {
                            let _ = reply.send(swarm.connections().map(|c| (c.id, c.peer)).collect());
                        }
                        Some(Command::Trim(reply)) => { let _ = reply.send(swarm.trim_open_conns()); }
                        Some(Command::Stop) | None => break,
                    }
                }
            }
        });
        Node {
            peer,
            addr,
            cm,
            metrics,
            requests: req_tx,
            inbound: in_rx,
            outbound: out_rx,
            events: ev_rx,
            commands: cmd_tx,
            task,
        }
    }

    /// The node's address with `/p2p/<peer>`.
    pub fn full_addr(&self) -> Multiaddr {
        meshwire_transport::with_peer_id(&self.addr, self.peer)
    }

    pub async fn dial(&self, opts: impl Into<DialOpts>) -> Result<ConnectionId, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial(opts.into(), tx))
            .expect("node alive");
        rx.await.expect("reply")
    }

    pub async fn connections(&self) -> Vec<(ConnectionId, PeerId)> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Connections(tx))
            .expect("node alive");
        rx.await.expect("reply")
    }

    /// Runs `Swarm::trim_open_conns` on the node's task; the number of connections closed.
    pub async fn trim_now(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Trim(tx)).expect("node alive");
        rx.await.expect("reply")
    }

    /// Waits (bounded) for an event matching `f`, skipping others.
    pub async fn wait_for<R>(&mut self, mut f: impl FnMut(&SwarmEvent<()>) -> Option<R>) -> R {
        let deadline = tokio::time::sleep(T);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    let ev = ev.expect("node stopped");
                    if let Some(r) = f(&ev) { return r; }
                }
                _ = &mut deadline => panic!("timed out waiting for an event"),
            }
        }
    }

    /// Dials `other` and waits until both ends report the connection.
    pub async fn connect(&mut self, other: &mut Node) -> ConnectionId {
        let id = self.dial(other.full_addr()).await.expect("dial");
        let peer = other.peer;
        self.wait_for(|e| match e {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == peer => Some(()),
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => None,
        })
        .await;
        let me = self.peer;
        other
            .wait_for(|e| match e {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == me => Some(()),
                _ => None,
            })
            .await;
        id
    }

    pub async fn next_inbound(&mut self) -> InboundStream {
        tokio::time::timeout(T, self.inbound.recv())
            .await
            .expect("timed out waiting for an inbound stream")
            .expect("node stopped")
    }

    pub async fn next_outbound(&mut self) -> OutboundStreamResult {
        tokio::time::timeout(T, self.outbound.recv())
            .await
            .expect("timed out waiting for an outbound stream")
            .expect("node stopped")
    }

    pub fn open(&self, req: OpenStream) {
        self.requests
            .send(ToSwarm::OpenStream(req))
            .expect("node alive");
    }

    /// Makes the node's behaviour return `cmd` to its swarm.
    pub fn behaviour_command(&self, cmd: ToSwarm<()>) {
        self.requests.send(cmd).expect("node alive");
    }

    pub async fn stop(self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.task.await;
    }
}
