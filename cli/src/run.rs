//! `meshwire node`: runs the node until SIGINT or SIGTERM, then leaves gracefully.
//!
//! Start-up prints one line per step on stdout (`peer id`, `listening on`, `metrics on`,
//! `bootstrap:`); logs go to stderr through `tracing`. Shutdown: leave every SWIM realm (the
//! others see `left`, not `failed`), close the relay listeners (their reservations end with
//! them), give both [`node.shutdown_grace`](crate::config::NodeSection) to go out, then close
//! every connection with the reason `meshwire node shutting down (SIGTERM)` (QUIC's close
//! reason phrase, which the peers log) and stop the swarm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire::connmgr::{BasicConnMgr, ConnManagerHandle};
use meshwire::holepunch;
use meshwire::prelude::*;
use meshwire::rpc;
use meshwire::swarm::DialError;
use meshwire::swim::SwimEvent;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError, Dur, Source};
use crate::metrics::Metrics;
use crate::node::{self, Node, NodeError, NodeEvent};
use crate::status::{self, Status};
use crate::{http, keyfile, settings};

/// Default of `node.shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// At most this long for the connections to close and the swarm to stop at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Time for QUIC to send the close frames once the swarm is gone.
const CLOSE_FLUSH: Duration = Duration::from_millis(100);

/// Default of `nat.startup_wait`.
pub const DEFAULT_NAT_STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Default of `metrics.refresh`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file.
    #[error(transparent)]
    Key(#[from] keyfile::KeyFileError),
    /// Building the node.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The swarm stopped.
    #[error("swarm: {0}")]
    Swarm(#[from] HandleError),
    /// Binding the metrics server, or the signal handlers.
    #[error("{0}")]
    Io(String),
}

/// What the HTTP server reads.
struct Served {
    handle: SwarmHandle<Node>,
    cm: ConnManagerHandle<BasicConnMgr>,
    realms: Vec<swim::Realm>,
    started: Instant,
    metrics: Metrics,
    refresh: Duration,
}

impl http::Source for Served {
    async fn status(&self) -> Result<Status, String> {
        status::collect(&self.handle, &self.cm, &self.realms, self.started)
            .await
            .map_err(|e| e.to_string())
    }

    fn metrics(&self, status: Option<&Status>) -> String {
        if let Some(s) = status {
            self.metrics.update(s);
        }
        self.metrics.encode()
    }

    fn refresh_ms(&self) -> u64 {
        u64::try_from(self.refresh.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Runs the node of `config` until a signal.
///
/// # Errors
///
/// [`RunError`].
pub async fn run(config: Config, source: Source) -> Result<(), RunError> {
    run_serving(config, source, Vec::new()).await
}

/// The built-in handlers `meshwire rpc serve` registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinHandler {
    /// Answers with the JSON argument it was called with (refuses an argument that is not
    /// JSON with a handler error).
    Echo,
}

impl BuiltinHandler {
    /// The handler's answer to `payload`.
    ///
    /// # Errors
    ///
    /// The message the caller gets as `RemoteError::Handler`.
    pub fn answer(self, payload: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            BuiltinHandler::Echo => {
                serde_json::from_slice::<serde_json::Value>(payload)
                    .map_err(|e| format!("echo: the argument is not JSON: {e}"))?;
                Ok(payload.to_vec())
            }
        }
    }
}

/// [`run`], serving the RPC procedures `serve` (each with its built-in handler) once the
/// node has bootstrapped: `meshwire rpc serve`.
///
/// # Errors
///
/// [`RunError`].
pub async fn run_serving(
    config: Config,
    source: Source,
    serve: Vec<(rpc::ProcedureName, BuiltinHandler)>,
) -> Result<(), RunError> {
    let key_path = config.node.key.clone().ok_or_else(|| ConfigError::Value {
        at: String::new(),
        key: "node.key".into(),
        message:
            "no key file; give --key <path> or node.key (create one with `meshwire id new <path>`)"
                .into(),
    })?;
    let key = keyfile::load(&key_path)?;
    let bootstrap = settings::peers(&config.node.bootstrap, "node.bootstrap", &source)?;
    let relay_listen = settings::addrs(&config.node.relay_listen, "node.relay_listen", &source)?;
    let external = settings::addrs(
        &config.node.external_addresses,
        "node.external_addresses",
        &source,
    )?;
    let metrics_addr = match &config.metrics.listen {
        Some(a) => Some(
            a.parse::<std::net::SocketAddr>()
                .map_err(|e| ConfigError::Value {
                    at: source.locate(a),
                    key: "metrics.listen".into(),
                    message: format!("{a:?}: {e}; expected <ip>:<port>, e.g. \"127.0.0.1:9464\""),
                })?,
        ),
        None => None,
    };
    let realms = settings::realms(&config, &source)?;
    let built = node::build(&config, &source, key)?;
    let started = Instant::now();
    let cm = built.conn_manager.clone();
    let (handle, mut events) = built.swarm.spawn();
    let me = handle.local_peer_id();
    println!("meshwire: peer id {me}");

    // The first listen addresses, so the progress lines come in a sensible order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let expected = config.node.listen.len();
    let mut seen = 0;
    while seen < expected {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => {
                if matches!(ev, SwarmEvent::NewListenAddr { .. }) {
                    seen += 1;
                }
                report(me, ev);
            }
            Ok(None) => return Err(RunError::Swarm(HandleError::SwarmGone)),
            Err(_) => break,
        }
    }
    for addr in external {
        handle.add_external_address(addr).await?;
    }

    if let Some(addr) = metrics_addr {
        let served = Arc::new(Served {
            handle: handle.clone(),
            cm: cm.clone(),
            realms: realms.clone(),
            started,
            metrics: Metrics::new(built.registry),
            refresh: config.metrics.refresh.map_or(DEFAULT_REFRESH, |Dur(d)| d),
        });
        let bound = http::serve(addr, served)
            .await
            .map_err(|e| RunError::Io(format!("metrics.listen {addr}: {e}")))?;
        println!("meshwire: metrics on http://{bound}/metrics, status page on http://{bound}/");
    }

    // With NAT detection configured, our profile comes first: the hole-punching connector
    // tells it to the peers of the first relayed connections (bootstrap, relay listen).
    let detecting = config.holepunch.enabled.unwrap_or(true) && !config.nat.observers.is_empty();
    if !config.nat.observers.is_empty() && !detecting {
        println!("meshwire: nat: observers ignored: NAT detection runs with hole punching (holepunch.enabled = false)");
    } else if detecting && seen == 0 {
        println!("meshwire: nat: no listen address: no NAT detection");
    }
    if detecting && seen > 0 {
        let wait = config
            .nat
            .startup_wait
            .map_or(DEFAULT_NAT_STARTUP_WAIT, |Dur(d)| d);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => {
                    let done = matches!(
                        ev,
                        SwarmEvent::Behaviour(NodeEvent::Holepunch(
                            holepunch::TraversalEvent::Nat(_)
                        ))
                    );
                    report(me, ev);
                    if done {
                        break;
                    }
                }
                Ok(None) => return Err(RunError::Swarm(HandleError::SwarmGone)),
                Err(_) => {
                    println!("meshwire: nat: not detected within {wait:?}; going on (detection continues)");
                    break;
                }
            }
        }
    }

    // Bootstrap: kademlia learns the peers and looks itself up; SWIM joins through them.
    if !bootstrap.is_empty() {
        for (peer, addr) in &bootstrap {
            match handle
                .dial(DialOpts::peer(*peer).address(addr.clone()))
                .await
            {
                // Already connected or being dialed: nothing to do.
                Ok(_) => {}
                Err(HandleError::Dial(e)) if matches!(*e, DialError::ConditionFalse(_)) => {}
                Err(e) => println!("meshwire: bootstrap: dial {addr}: {e}"),
            }
        }
        let peers = bootstrap.clone();
        let joins = realms.clone();
        let result = handle
            .with_behaviour(move |b: &mut Node| {
                for (peer, addr) in &peers {
                    b.kad().add_address(*peer, addr.clone());
                }
                let mut errors = Vec::new();
                if let Some(swim) = b.swim.as_mut() {
                    for realm in &joins {
                        if let Err(e) = swim.join(realm, &peers) {
                            errors.push(format!("swim join {realm}: {e}"));
                        }
                    }
                }
                (b.kad().bootstrap().map_err(|e| e.to_string()), errors)
            })
            .await?;
        if let Err(e) = result.0 {
            println!("meshwire: bootstrap: {e}");
        }
        for e in result.1 {
            println!("meshwire: {e}");
        }
        for (peer, addr) in &bootstrap {
            match handle
                .dial(DialOpts::peer(*peer).address(addr.clone()))
                .await
            {
                // Already connected or being dialed: nothing to do.
                Ok(_) => {}
                Err(HandleError::Dial(e)) if matches!(*e, DialError::ConditionFalse(_)) => {}
                Err(e) => println!("meshwire: bootstrap: dial {addr}: {e}"),
            }
        }
    }
    let realm = settings::rpc(&config, &source)?.engine.realm;
    for (name, handler) in serve {
        let shown = name.clone();
        let registered = handle
            .with_behaviour(move |b: &mut Node| {
                b.rpc.register(name, move |payload: Vec<u8>| async move {
                    handler.answer(&payload)
                })
            })
            .await?;
        match registered {
            Ok(_) => println!("meshwire: serving rpc {shown} in realm {realm}"),
            Err(e) => println!("meshwire: serving rpc {shown} (not announced: {e})"),
        }
    }
    let mut relay_listeners = Vec::new();
    for addr in relay_listen {
        let addr = if addr.iter().any(|p| p == Protocol::P2pCircuit) {
            addr
        } else {
            addr.with(Protocol::P2pCircuit)
        };
        match handle.listen_on(addr.clone()).await {
            Ok(id) => relay_listeners.push(id),
            Err(e) => println!("meshwire: relay listen {addr}: {e}"),
        }
    }

    let mut term = signal(SignalKind::terminate())
        .map_err(|e| RunError::Io(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| RunError::Io(format!("SIGINT handler: {e}")))?;
    let why = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => report(me, ev),
                None => return Err(RunError::Swarm(HandleError::SwarmGone)),
            },
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    shutdown(&handle, &mut events, relay_listeners, &config, why).await
}

async fn shutdown(
    handle: &SwarmHandle<Node>,
    events: &mut mpsc::Receiver<SwarmEvent<NodeEvent>>,
    relay_listeners: Vec<meshwire::transport::ListenerId>,
    config: &Config,
    why: &str,
) -> Result<(), RunError> {
    println!("meshwire: {why}: shutting down");
    let reservations = handle
        .with_behaviour(|b: &mut Node| {
            if let Some(swim) = b.swim.as_mut() {
                swim.leave();
            }
            b.relay_client.reservations().len()
        })
        .await?;
    for id in relay_listeners {
        handle.remove_listener(id).await?;
    }
    let grace = config
        .node
        .shutdown_grace
        .map_or(DEFAULT_SHUTDOWN_GRACE, |Dur(d)| d);
    let until = tokio::time::Instant::now() + grace;
    // Keep the swarm's events flowing while the leave and the closes go out.
    while let Ok(Some(_)) = tokio::time::timeout_at(until, events.recv()).await {}
    let conns = handle.connections().await?;
    let reason = format!("meshwire node shutting down ({why})");
    for c in &conns {
        handle
            .close_connection_with_reason(c.id, reason.as_str())
            .await?;
    }
    // Each close reported, then the swarm stopped and gone (the receiver ends), then a moment
    // for QUIC to send the CONNECTION_CLOSE frames: the peers learn at once, not at their
    // idle timeout, and a relay frees our reservation.
    let until = tokio::time::Instant::now() + CLOSE_WAIT;
    let mut open = conns.len();
    while open > 0 {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(SwarmEvent::ConnectionClosed { .. })) => open -= 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    handle.shutdown().await?;
    while let Ok(Some(_)) = tokio::time::timeout_at(until, events.recv()).await {}
    tokio::time::sleep(CLOSE_FLUSH).await;
    println!(
        "meshwire: left {} realms, released {reservations} relay reservations, closed {} connections (shutdown)",
        config.node.realms.len(),
        conns.len()
    );
    Ok(())
}

/// The NAT detector's and the hole-punching connector's lines.
fn report_traversal(ev: holepunch::TraversalEvent) {
    use holepunch::{ConnectOutcome, ConnectorEvent, TraversalEvent};
    use meshwire::nat::DetectorEvent;
    match ev {
        TraversalEvent::Nat(DetectorEvent::Detected { profile, .. }) => {
            println!("meshwire: nat: {}", crate::status::NatStatus::of(&profile));
        }
        TraversalEvent::Nat(DetectorEvent::Failed(e)) => {
            println!("meshwire: nat: detection failed: {e}");
        }
        TraversalEvent::Connector(ConnectorEvent::Finished { peer, outcome }) => match outcome {
            ConnectOutcome::Direct { method, elapsed } => println!(
                "meshwire: holepunch {peer}: direct connection ({}, {} ms)",
                method.label(),
                elapsed.as_millis()
            ),
            ConnectOutcome::Failed { method, error } => println!(
                "meshwire: holepunch {peer}: {} failed: {error}; staying on the relay",
                method.label()
            ),
            ConnectOutcome::Skipped(reason) => {
                println!("meshwire: holepunch {peer}: skipped ({reason}); staying on the relay")
            }
        },
        other => tracing::debug!(?other, "holepunch"),
    }
}

/// Progress lines for the events a user watches; the rest at debug level.
fn report(me: PeerId, ev: SwarmEvent<NodeEvent>) {
    match ev {
        SwarmEvent::NewListenAddr { address, .. } => {
            println!("meshwire: listening on {}", with_peer_id(&address, me));
        }
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => {
            tracing::info!(peer = %peer_id, addr = %endpoint.remote_addr(), relayed = endpoint.is_relayed(), "connected");
        }
        SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
            tracing::info!(peer = %peer_id, ?cause, "disconnected");
        }
        SwarmEvent::Behaviour(NodeEvent::Rpc(rpc::Event::Kad(kad::Event::QueryFinished {
            result: kad::QueryResult::Bootstrap(r),
            ..
        }))) => match r {
            Ok(ok) => println!(
                "meshwire: bootstrap: {} peers in the routing table",
                ok.table_size
            ),
            Err(e) => println!("meshwire: bootstrap failed: {e}"),
        },
        SwarmEvent::Behaviour(NodeEvent::Swim(ev)) => match ev {
            SwimEvent::MemberJoined { realm, member } => {
                println!("meshwire: swim {realm}: {} joined", member.peer);
            }
            SwimEvent::MemberLeft { realm, peer, .. } => {
                println!("meshwire: swim {realm}: {peer} left")
            }
            SwimEvent::MemberFailed { realm, peer, .. } => {
                println!("meshwire: swim {realm}: {peer} failed")
            }
            SwimEvent::JoinFailed { realm, seed } => {
                println!("meshwire: swim {realm}: join through {seed} failed")
            }
            other => tracing::debug!(?other, "swim"),
        },
        SwarmEvent::Behaviour(NodeEvent::RelayClient(ev)) => tracing::info!(?ev, "relay client"),
        SwarmEvent::Behaviour(NodeEvent::Holepunch(ev)) => report_traversal(ev),
        SwarmEvent::ListenerClosed {
            addresses, reason, ..
        } => {
            tracing::info!(?addresses, ?reason, "listener closed");
        }
        other => tracing::debug!(?other, "event"),
    }
}
