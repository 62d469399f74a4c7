//! Circuit relay v2 on loopback: a relay, a peer listening through it and a peer dialing that
//! one through it; the relayed connection (Noise + Yamux over the relay's streams) carries
//! ping like any other connection.
//!
//! ```sh
//! cargo run --example relay
//! # relay     12D3KooW... at /ip4/127.0.0.1/udp/.../quic-v1/p2p/12D3KooW...
//! # listener  12D3KooW... reserved a slot (expires in 3600 s, circuits limited to 120 s / 131072 bytes)
//! # listener  reachable at /ip4/127.0.0.1/udp/.../p2p/12D3KooW.../p2p-circuit
//! # dialer    connected to 12D3KooW... through relay 12D3KooW... (relayed: true)
//! # dialer    ping 12D3KooW... rtt=0.9ms (relayed)
//! ```
//!
//! `--pings N` sets how many relayed pings to show (default 5).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use meshwire::prelude::*;
use meshwire::relay::{client, Behaviour as RelayServer, ServerConfig};

#[derive(Parser, Debug)]
#[command(about = "A relay, a peer behind it and a peer reaching it through the relay")]
struct Args {
    /// Relayed pings to show before exiting.
    #[arg(long, default_value_t = 5)]
    pings: usize,
}

#[derive(NetworkBehaviour)]
struct Peer {
    relay_client: client::Behaviour,
    ping: ping::Behaviour,
}

fn pinger() -> ping::Behaviour {
    ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(500)))
}

/// A node with QUIC and, because its behaviour takes the relay client, the relay client's
/// transport composed in by the builder.
fn peer() -> Result<Swarm<Peer>, Box<dyn std::error::Error>> {
    Ok(SwarmBuilder::with_new_identity().build(|ctx| Peer {
        relay_client: ctx.relay_client(),
        ping: pinger(),
    })?)
}

fn short(peer: &PeerId) -> String {
    let s = peer.to_string();
    format!("{}…{}", &s[..8], &s[s.len() - 6..])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();

    // 1. The relay: QUIC only, the relay server with its default limits.
    let mut relay = SwarmBuilder::with_new_identity()
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
        .try_build(|ctx| RelayServer::new(ctx.key().clone(), ServerConfig::default()))?;
    let relay_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = relay.next_event().await {
            break with_peer_id(&address, relay.local_peer_id());
        }
    };
    let relay_id = relay.local_peer_id();
    println!("relay     {} at {relay_addr}", short(&relay_id));
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(ev) = relay.next_event().await {
                println!("relay     {ev:?}");
            }
        }
    });

    // 2. The listener: reserves a slot on the relay and listens through it.
    let mut listener = peer()?;
    let listener_id = listener.local_peer_id();
    listener.listen_on(relay_addr.clone().with(Protocol::P2pCircuit))?;
    let relayed_addr: Multiaddr = loop {
        match listener.next_event().await {
            SwarmEvent::Behaviour(PeerEvent::RelayClient(client::Event::ReservationAccepted {
                expire,
                limit,
                ..
            })) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                let limit = limit.unwrap_or_default();
                println!(
                    "listener  {} reserved a slot (expires in {} s, circuits limited to {} s / {} bytes)",
                    short(&listener_id),
                    expire.saturating_sub(now),
                    limit.duration.map_or("∞".into(), |d| d.to_string()),
                    limit.data.map_or("∞".into(), |d| d.to_string()),
                );
            }
            SwarmEvent::NewListenAddr { address, .. } => break address,
            SwarmEvent::ListenerClosed { reason, .. } => {
                return Err(format!("reservation failed: {reason:?}").into())
            }
            _ => {}
        }
    };
    println!("listener  reachable at {relayed_addr}");
    tokio::spawn(async move {
        loop {
            listener.next_event().await;
        }
    });

    // 3. The dialer: reaches the listener only through its relayed address.
    let mut dialer = peer()?;
    dialer.dial(DialOpts::peer(listener_id).address(with_peer_id(&relayed_addr, listener_id)))?;
    let mut shown = 0;
    while shown < args.pings {
        match dialer.next_event().await {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if peer_id == listener_id => println!(
                "dialer    connected to {} through relay {} (relayed: {})",
                short(&peer_id),
                endpoint.relay_peer_id().map_or("-".into(), |r| short(&r)),
                endpoint.is_relayed()
            ),
            SwarmEvent::Behaviour(PeerEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) if peer == listener_id => {
                println!(
                    "dialer    ping {} rtt={:.1}ms (relayed)",
                    short(&peer),
                    rtt.as_secs_f64() * 1e3
                );
                shown += 1;
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                return Err(format!("dial through the relay failed: {error}").into())
            }
            _ => {}
        }
    }
    Ok(())
}
