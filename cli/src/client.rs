//! The client subcommands: each runs a short-lived node (a fresh identity unless `--key`),
//! reaches the network through the given addresses, does one thing and exits.

use std::time::Duration;

use meshwire::kad::{QueryOrigin, QueryResult};
use meshwire::prelude::*;
use meshwire::rpc;
use tokio::sync::mpsc;

use crate::config::{Config, KadMode, Source};
use crate::node::{self, Node, NodeEvent};
use crate::run::RunError;
use crate::settings;

/// What a client subcommand failed at.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Building or running the node.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The network did not answer as hoped.
    #[error("{0}")]
    Failed(String),
}

impl From<HandleError> for ClientError {
    fn from(e: HandleError) -> Self {
        ClientError::Run(RunError::Swarm(e))
    }
}

/// How long `kad provide` keeps its node up after the lookup, for the ADD_PROVIDER messages.
const PROVIDE_LINGER: Duration = Duration::from_millis(500);

type Events = mpsc::Receiver<SwarmEvent<NodeEvent>>;

async fn start(config: &Config, key: Keypair) -> Result<(SwarmHandle<Node>, Events), ClientError> {
    let mut config = config.clone();
    config.kad.mode.get_or_insert(KadMode::Client);
    config.node.listen.clear();
    config.node.realms.clear();
    config.relay_server.enabled = Some(false);
    let built = node::build(&config, &Source::default(), key).map_err(RunError::from)?;
    Ok(built.swarm.spawn())
}

/// `meshwire ping <addr>`: `count` pings to the peer at `addr` (ending in `/p2p/<peer>`),
/// one line each; fails if none answers within `timeout`.
///
/// # Errors
///
/// [`ClientError`].
pub async fn ping(
    config: &Config,
    key: Keypair,
    addr: &str,
    count: usize,
    timeout: Duration,
) -> Result<(), ClientError> {
    let (peer, addr) = settings::peers(&[addr.to_string()], "address", &Source::default())
        .map_err(RunError::from)?
        .remove(0);
    let mut config = config.clone();
    config
        .ping
        .interval
        .get_or_insert(crate::config::Dur(Duration::from_millis(200)));
    let (handle, mut events) = start(&config, key).await?;
    handle
        .dial(DialOpts::peer(peer).address(addr.clone()))
        .await?;
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while got < count {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                ClientError::Failed(format!(
                    "ping {addr}: {got} of {count} pings answered within {timeout:?}"
                ))
            })?;
        match ev {
            Some(SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event {
                peer: p, result, ..
            }))) if p == peer => match result {
                Ok(rtt) => {
                    got += 1;
                    println!("ping {peer} rtt={:.2}ms", rtt.as_secs_f64() * 1e3);
                }
                Err(e) => return Err(ClientError::Failed(format!("ping {peer}: {e}"))),
            },
            Some(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                return Err(ClientError::Failed(format!("dial {addr}: {error}")))
            }
            Some(_) => {}
            None => return Err(ClientError::Failed("the node stopped".into())),
        }
    }
    handle.shutdown().await?;
    Ok(())
}

/// A kademlia operation of `meshwire kad`.
#[derive(Clone, Debug)]
pub enum KadOp {
    /// Stores `value` under `key`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Reads the value under `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Announces this (short-lived) node as a provider of `key`.
    Provide {
        /// The key.
        key: String,
    },
    /// Lists the providers of `key`.
    Providers {
        /// The key.
        key: String,
    },
}

/// `meshwire kad …`: connects to the `bootstrap` peers, runs `op`, prints its result.
///
/// # Errors
///
/// [`ClientError`]: no bootstrap peer reachable, or the query failed.
pub async fn kad(
    config: &Config,
    key: Keypair,
    bootstrap: &[String],
    op: KadOp,
    timeout: Duration,
) -> Result<(), ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (handle, mut events) = connect(config, key, bootstrap, deadline).await?;
    let op2 = op.clone();
    let query = handle
        .with_behaviour(move |b: &mut Node| match op2 {
            KadOp::Put { key, value } => b
                .kad()
                .put_record(kad::Record::new(key.as_str(), value.into_bytes()), 1)
                .map_err(|e| e.to_string()),
            KadOp::Get { key } => Ok(b.kad().get_record(key.as_str().into(), 1)),
            KadOp::Provide { key } => b
                .kad()
                .start_providing(key.as_str().into())
                .map_err(|e| e.to_string()),
            KadOp::Providers { key } => Ok(b.kad().get_providers(key.as_str().into())),
        })
        .await?
        .map_err(ClientError::Failed)?;
    let result = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(SwarmEvent::Behaviour(NodeEvent::Rpc(rpc::Event::Kad(
                kad::Event::QueryFinished {
                    id,
                    origin: QueryOrigin::User,
                    result,
                    ..
                },
            )))))
                if id == query =>
            {
                break result
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(ClientError::Failed("the node stopped".into())),
            Err(_) => return Err(ClientError::Failed(format!("no answer within {timeout:?}"))),
        }
    };
    let out = match result {
        QueryResult::PutValue(Ok(ok)) => Ok(format!("stored on {} peers", ok.successes)),
        QueryResult::StartProviding(Ok(_)) => Ok("providing".to_string()),
        QueryResult::GetValue(Ok(ok)) => ok
            .records
            .first()
            .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
            .ok_or_else(|| "not found".to_string()),
        QueryResult::GetProviders(Ok(ok)) => Ok(ok
            .providers
            .iter()
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>()
            .join("\n")),
        QueryResult::PutValue(Err(e))
        | QueryResult::GetValue(Err(e))
        | QueryResult::StartProviding(Err(e))
        | QueryResult::GetProviders(Err(e)) => Err(e.to_string()),
        other => Err(format!("unexpected result {other:?}")),
    };
    if matches!(op, KadOp::Provide { .. }) {
        // ADD_PROVIDER is sent without an answer once the lookup finished: give the streams
        // a moment to be written before the node goes away.
        let linger = tokio::time::Instant::now() + PROVIDE_LINGER;
        while let Ok(Some(_)) = tokio::time::timeout_at(linger, events.recv()).await {}
    }
    handle.shutdown().await?;
    match out {
        Ok(s) => {
            println!("{s}");
            Ok(())
        }
        Err(e) => Err(ClientError::Failed(format!("{op:?}: {e}"))),
    }
}

/// How long `rpc call` waits before asking the DHT again when nobody provides the name yet
/// (the provider's announcement may still be on its way).
const NO_PROVIDERS_RETRY: Duration = Duration::from_millis(500);

/// `meshwire rpc call <name> <json>`: connects to the `bootstrap` peers, finds a provider of
/// `name` in the realm of `[rpc]` through the DHT, calls it with the JSON argument and
/// prints the result (UTF-8, lossy). While nobody provides the name it asks again until
/// `timeout`.
///
/// # Errors
///
/// [`ClientError`]: `json` is not JSON, `name` is not a procedure name, no bootstrap peer
/// reachable, or the call failed.
pub async fn rpc_call(
    config: &Config,
    key: Keypair,
    bootstrap: &[String],
    name: &str,
    json: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let name: rpc::ProcedureName = name
        .parse()
        .map_err(|e| ClientError::Failed(format!("procedure name {name:?}: {e}")))?;
    serde_json::from_str::<serde_json::Value>(json)
        .map_err(|e| ClientError::Failed(format!("the argument is not JSON: {e}")))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let (handle, mut events) = connect(config, key, bootstrap, deadline).await?;
    // The events are drained so the swarm never waits on a full channel.
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let result = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let opts = rpc::CallOpts::default().with_timeout(left.max(Duration::from_millis(1)));
        let (n, payload) = (name.clone(), json.as_bytes().to_vec());
        let result = handle
            .with_behaviour(move |b: &mut Node| b.rpc.call_async(n, payload, opts))
            .await?
            .await;
        match result {
            Err(rpc::CallError::NoProviders)
                if tokio::time::Instant::now() + NO_PROVIDERS_RETRY < deadline =>
            {
                tokio::time::sleep(NO_PROVIDERS_RETRY).await;
            }
            other => break other,
        }
    };
    handle.shutdown().await?;
    drain.abort();
    match result {
        Ok(bytes) => {
            println!("{}", String::from_utf8_lossy(&bytes));
            Ok(())
        }
        Err(e) => Err(ClientError::Failed(format!("rpc call {name}: {e}"))),
    }
}

/// A short-lived node that knows the `bootstrap` peers (in kademlia) and is connected to one.
async fn connect(
    config: &Config,
    key: Keypair,
    bootstrap: &[String],
    deadline: tokio::time::Instant,
) -> Result<(SwarmHandle<Node>, Events), ClientError> {
    let peers =
        settings::peers(bootstrap, "--bootstrap", &Source::default()).map_err(RunError::from)?;
    if peers.is_empty() {
        return Err(ClientError::Failed(
            "no --bootstrap peer given (or node.bootstrap in --config)".into(),
        ));
    }
    let (handle, mut events) = start(config, key).await?;
    let known = peers.clone();
    handle
        .with_behaviour(move |b: &mut Node| {
            for (p, a) in &known {
                b.kad().add_address(*p, a.clone());
            }
        })
        .await?;
    for (p, a) in &peers {
        handle.dial(DialOpts::peer(*p).address(a.clone())).await?;
    }
    // Wait for one bootstrap connection, so the queries have someone to ask.
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(SwarmEvent::ConnectionEstablished { .. })) => break,
            Ok(Some(_)) => {}
            Ok(None) => return Err(ClientError::Failed("the node stopped".into())),
            Err(_) => return Err(ClientError::Failed("no bootstrap peer reachable".into())),
        }
    }
    Ok((handle, events))
}
