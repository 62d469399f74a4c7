//! `meshwire chat <topic>`: a short-lived node on a pubsub topic. Each line of stdin is
//! published; each message received is printed as `<author peer id>: <text>`. Progress lines
//! start with `meshwire: ` (`peer id`, `listening on`, `<peer> joined <topic>`); a line that
//! could not be sent (no peer on the topic yet) is reported on stderr. Ends at the end of
//! stdin (after a moment for the last messages to go out), or at SIGINT/SIGTERM.

use std::time::Duration;

use meshwire::prelude::*;
use meshwire::pubsub;
use meshwire::swarm::DialError;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::client::ClientError;
use crate::config::{Config, KadMode, Source};
use crate::node::{self, Node, NodeEvent};
use crate::run::RunError;
use crate::settings;

/// How long `chat` stays up after the end of stdin, for its last messages to go out.
pub const EOF_LINGER: Duration = Duration::from_secs(1);

/// Runs `meshwire chat <topic>`: listens on `listen` (if any), connects to `bootstrap`.
///
/// # Errors
///
/// [`ClientError`]: bad addresses, a node that cannot be built, or the swarm stopping.
pub async fn chat(
    config: &Config,
    key: Keypair,
    topic: &str,
    listen: &[String],
    bootstrap: &[String],
) -> Result<(), ClientError> {
    let peers =
        settings::peers(bootstrap, "--bootstrap", &Source::default()).map_err(RunError::from)?;
    let mut config = config.clone();
    config.kad.mode.get_or_insert(KadMode::Client);
    config.node.listen = listen.to_vec();
    config.node.realms.clear();
    config.relay_server.enabled = Some(false);
    config.pubsub.enabled = Some(true);
    let built = node::build(&config, &Source::default(), key).map_err(RunError::from)?;
    let (handle, mut events) = built.swarm.spawn();
    let me = handle.local_peer_id();
    println!("meshwire: peer id {me}");
    let t = topic.to_string();
    let known = peers.clone();
    handle
        .with_behaviour(move |b: &mut Node| {
            for (p, a) in &known {
                b.kad().add_address(*p, a.clone());
            }
            if let Some(p) = b.pubsub.as_mut() {
                p.subscribe(t.as_str());
            }
        })
        .await?;
    for (p, a) in &peers {
        match handle.dial(DialOpts::peer(*p).address(a.clone())).await {
            Ok(_) => {}
            Err(HandleError::Dial(e)) if matches!(*e, DialError::ConditionFalse(_)) => {}
            Err(e) => eprintln!("meshwire: dial {a}: {e}"),
        }
    }
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| RunError::Io(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| RunError::Io(format!("SIGINT handler: {e}")))?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut linger = None;
    loop {
        let until_linger = async {
            match linger {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    let (t, data) = (topic.to_string(), line.into_bytes());
                    let sent = handle
                        .with_behaviour(move |b: &mut Node| {
                            b.pubsub.as_mut().map(|p| p.publish(t.as_str(), data))
                        })
                        .await?;
                    if let Some(Err(e)) = sent {
                        eprintln!("meshwire: not sent: {e}");
                    }
                }
                Ok(None) | Err(_) => {
                    stdin_open = false;
                    linger = Some(tokio::time::Instant::now() + EOF_LINGER);
                }
            },
            ev = events.recv() => match ev {
                Some(ev) => show(me, topic, ev),
                None => return Err(RunError::Swarm(HandleError::SwarmGone).into()),
            },
            _ = until_linger => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    handle.shutdown().await?;
    Ok(())
}

/// The lines of the events a chatter sees.
fn show(me: PeerId, topic: &str, ev: SwarmEvent<NodeEvent>) {
    match ev {
        SwarmEvent::NewListenAddr { address, .. } => {
            println!("meshwire: listening on {}", with_peer_id(&address, me));
        }
        SwarmEvent::Behaviour(NodeEvent::Pubsub(pubsub::Event::Message { message, .. }))
            if message.topic.as_str() == topic =>
        {
            let from = message
                .source
                .map_or_else(|| "anonymous".to_string(), |p| p.to_string());
            println!("{from}: {}", String::from_utf8_lossy(&message.data));
        }
        SwarmEvent::Behaviour(NodeEvent::Pubsub(pubsub::Event::Subscribed { peer, topic: t }))
            if t.as_str() == topic =>
        {
            println!("meshwire: {peer} joined {topic}");
        }
        SwarmEvent::Behaviour(NodeEvent::Pubsub(pubsub::Event::Unsubscribed {
            peer,
            topic: t,
        })) if t.as_str() == topic => {
            println!("meshwire: {peer} left {topic}");
        }
        other => tracing::debug!(?other, "event"),
    }
}
