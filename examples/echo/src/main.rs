//! `cargo run -p meshwire-echo`: three swarms on loopback, each composing the echo behaviour
//! of this crate with meshwire's ping through `#[derive(NetworkBehaviour)]`. Node 0 asks the
//! others to echo a message, prints the replies and the ping round-trip times, and exits 0.

use std::time::Duration;

use meshwire::core::Keypair;
use meshwire::ping;
use meshwire::swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::transport::with_peer_id;
use meshwire_echo::{Echo, EchoEvent};

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

fn new_swarm() -> Result<Swarm<App>, Box<dyn std::error::Error>> {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default())?;
    let app = App {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200))),
        echo: Echo::default(),
    };
    Ok(Swarm::new(transport, app, SwarmConfig::default()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut s = new_swarm()?;
        s.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = s.next_event().await {
                break address;
            }
        };
        nodes.push((s, addr));
    }
    let (mut a, _) = nodes.remove(0);
    let mut others = nodes;
    let mut expected = Vec::new();
    for (s, addr) in &others {
        let peer = s.local_peer_id();
        a.dial(with_peer_id(addr, peer))?;
        let msg = format!("hello {peer}").into_bytes();
        a.behaviour_mut().echo.send(peer, msg.clone())?;
        expected.push((peer, msg));
    }
    // The other nodes run in their own tasks.
    let tasks: Vec<_> = others
        .drain(..)
        .map(|(mut s, _)| {
            tokio::spawn(async move {
                loop {
                    s.next_event().await;
                }
            })
        })
        .collect();

    let mut replies = 0;
    let mut pinged = std::collections::HashSet::new();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while replies < expected.len() || pinged.len() < expected.len() {
        tokio::select! {
            ev = a.next_event() => match ev {
                SwarmEvent::Behaviour(AppEvent::Echo(EchoEvent::Reply { peer, data, rtt, .. })) => {
                    let want = expected.iter().find(|(p, _)| *p == peer).map(|(_, m)| m);
                    if want != Some(&data) {
                        return Err(format!("wrong echo from {peer}").into());
                    }
                    println!("echo {peer}: {:?} in {:.3}ms", String::from_utf8_lossy(&data), rtt.as_secs_f64() * 1e3);
                    replies += 1;
                }
                SwarmEvent::Behaviour(AppEvent::Echo(EchoEvent::Failed { peer, error, .. })) => {
                    return Err(format!("echo to {peer} failed: {error}").into());
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
    for t in tasks {
        t.abort();
    }
    println!(
        "{replies} echoes and {} pinged peers over one derived behaviour",
        pinged.len()
    );
    Ok(())
}
