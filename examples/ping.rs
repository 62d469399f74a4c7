//! A ping tool, compatible with rust-libp2p's and go-libp2p's ping over QUIC.
//!
//! ```sh
//! cargo run --example ping -- --listen /ip4/127.0.0.1/udp/0/quic-v1
//! # listening on /ip4/127.0.0.1/udp/50123/quic-v1/p2p/12D3KooW...
//! cargo run --example ping -- --dial /ip4/127.0.0.1/udp/50123/quic-v1/p2p/12D3KooW...
//! # ping 12D3KooW... rtt=0.412ms
//! ```
//!
//! A node both answers pings and pings every peer it is connected to. `--count N` exits after
//! N successful pings (of any peer); without it the tool runs until interrupted.

use std::time::Duration;

use clap::Parser;
use meshwire::core::Keypair;
use meshwire::ping;
use meshwire::swarm::{Swarm, SwarmConfig, SwarmEvent};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::transport::{with_peer_id, Multiaddr};

#[derive(Parser, Debug)]
#[command(about = "Ping libp2p peers over QUIC (/ipfs/ping/1.0.0)")]
struct Args {
    /// Address to listen on, e.g. /ip4/127.0.0.1/udp/0/quic-v1 (repeatable).
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// Address to dial, ending in /p2p/<peer id> (repeatable).
    #[arg(long)]
    dial: Vec<Multiaddr>,
    /// Exit after this many successful pings.
    #[arg(long)]
    count: Option<usize>,
    /// Time between pings of one connection, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.listen.is_empty() && args.dial.is_empty() {
        return Err("nothing to do: give --listen and/or --dial".into());
    }
    let key = Keypair::generate();
    let local = key.peer_id();
    let transport = QuicTransport::new(key, QuicConfig::default())?;
    let behaviour = ping::Behaviour::new(
        ping::Config::new().with_interval(Duration::from_millis(args.interval_ms)),
    );
    // Pings alone do not keep a connection open; this tool exists to ping, so keep them.
    let config = SwarmConfig {
        idle_connection_timeout: None,
        ..SwarmConfig::default()
    };
    let mut swarm = Swarm::new(transport, behaviour, config);
    for addr in args.listen {
        swarm.listen_on(addr)?;
    }
    for addr in args.dial {
        swarm.dial(addr)?;
    }
    let mut pings = 0;
    loop {
        match swarm.next_event().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                println!("listening on {}", with_peer_id(&address, local));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                println!("connected to {peer_id} at {}", endpoint.remote_addr());
            }
            SwarmEvent::Behaviour(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                println!("ping {peer} rtt={:.3}ms", rtt.as_secs_f64() * 1e3);
                pings += 1;
                if args.count.is_some_and(|c| pings >= c) {
                    return Ok(());
                }
            }
            SwarmEvent::Behaviour(ping::Event {
                peer,
                result: Err(e),
                ..
            }) => eprintln!("ping {peer} failed: {e}"),
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                return Err(format!("dial failed: {error}").into());
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                println!("disconnected from {peer_id}: {cause}");
            }
            _ => {}
        }
    }
}
