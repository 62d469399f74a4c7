//! `cargo run -p meshwire-echo`: three swarms on loopback, each composing the echo behaviour
//! of this crate with meshwire's ping through `#[derive(NetworkBehaviour)]`. Node 0 asks the
//! others to echo a message, prints the replies and the ping round-trip times, and exits 0.

use std::time::Duration;

use meshwire::prelude::*;
use meshwire_echo::{Echo, EchoEvent, MAX_MESSAGE};

/// The application's behaviour: ping and this crate's echo, side by side.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "AppEvent")]
struct App {
    ping: ping::Behaviour,
    echo: Echo,
}

/// The application's own event type, fed by `From` impls.
#[derive(Debug)]
enum AppEvent {
    Ping(ping::Event),
    Echo(EchoEvent),
}

impl From<ping::Event> for AppEvent {
    fn from(e: ping::Event) -> Self {
        AppEvent::Ping(e)
    }
}

impl From<EchoEvent> for AppEvent {
    fn from(e: EchoEvent) -> Self {
        AppEvent::Echo(e)
    }
}

/// A node on its own task: its handle, its events and its address.
async fn node(
) -> Result<(SwarmHandle<App>, Receiver<SwarmEvent<AppEvent>>, Multiaddr), Box<dyn std::error::Error>>
{
    let swarm = SwarmBuilder::with_new_identity()
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
        .build(|_| App {
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
            echo: Echo::new(MAX_MESSAGE),
        })?;
    let (handle, mut events) = swarm.spawn();
    loop {
        match events.recv().await {
            Some(SwarmEvent::NewListenAddr { address, .. }) => {
                let addr = with_peer_id(&address, handle.local_peer_id());
                return Ok((handle, events, addr));
            }
            Some(_) => {}
            None => return Err("the node stopped".into()),
        }
    }
}

type Receiver<T> = tokio::sync::mpsc::Receiver<T>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a, mut a_events, _) = node().await?;
    // The other two nodes answer on their own tasks; their events are not read.
    let mut expected = Vec::new();
    for _ in 0..2 {
        let (other, _events, addr) = node().await?;
        let peer = other.local_peer_id();
        a.dial(addr).await?;
        let msg = format!("hello {peer}").into_bytes();
        let sent = msg.clone();
        a.with_behaviour(move |b| b.echo.send(peer, sent)).await??;
        expected.push((peer, msg, other));
    }

    let mut replies = 0;
    let mut pinged = std::collections::HashSet::new();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while replies < expected.len() || pinged.len() < expected.len() {
        tokio::select! {
            ev = a_events.recv() => match ev.ok_or("node a stopped")? {
                SwarmEvent::Behaviour(AppEvent::Echo(EchoEvent::Reply { peer, result, .. })) => {
                    let (data, rtt) = result.map_err(|e| format!("echo to {peer} failed: {e}"))?;
                    let want = expected.iter().find(|(p, _, _)| *p == peer).map(|(_, m, _)| m);
                    if want != Some(&data) {
                        return Err(format!("wrong echo from {peer}").into());
                    }
                    println!("echo {peer}: {:?} in {:.3}ms", String::from_utf8_lossy(&data), rtt.as_secs_f64() * 1e3);
                    replies += 1;
                }
                SwarmEvent::Behaviour(AppEvent::Ping(ping::Event { peer, result: Ok(rtt), .. }))
                    if pinged.insert(peer) =>
                {
                    println!("ping {peer} rtt={:.3}ms", rtt.as_secs_f64() * 1e3);
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(format!("dial failed: {error}").into());
                }
                _ => {}
            },
            _ = &mut deadline => return Err("timed out".into()),
        }
    }
    for (_, _, other) in &expected {
        other.shutdown().await?;
    }
    a.shutdown().await?;
    println!(
        "{replies} echoes and {} pinged peers over one derived behaviour",
        pinged.len()
    );
    Ok(())
}
