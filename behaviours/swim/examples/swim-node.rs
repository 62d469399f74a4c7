//! A SWIM node over QUIC: joins a realm through seeds and prints one line per membership event.
//!
//! ```sh
//! # first node (the seed), then others through it:
//! cargo run -p meshwire-swim --example swim-node -- --listen /ip4/127.0.0.1/udp/4001/quic-v1
//! cargo run -p meshwire-swim --example swim-node -- --listen /ip4/127.0.0.1/udp/4002/quic-v1 \
//!     --seed /ip4/127.0.0.1/udp/4001/quic-v1/p2p/<peer id printed by the first>
//! ```
//!
//! Standard output, one line each (machine-readable; the network-namespace test reads it):
//!
//! ```text
//! peer <own peer id>
//! listening <address>
//! joined <peer>        a member became known, or came back after failing or leaving
//! alive <peer>         a suspected member refuted the suspicion (alive again)
//! suspected <peer>
//! failed <peer>
//! left <peer>
//! updated <peer>       a member's addresses or data changed
//! join-failed <seed>
//! members <n> <peer>...   answer to the `members` command
//! ```
//!
//! With `--stdin-control` it reads commands from standard input: `members` prints the live
//! members, `leave` leaves gracefully and exits; end of input exits at once (so a node
//! started by a test dies with it). A node alone in its realm joins through its seeds again
//! every `--rejoin-interval-ms`. Logs (`RUST_LOG`) go to standard error.

use std::time::Duration;

use clap::Parser;
use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::{Multiaddr, Swarm, SwarmConfig, SwarmEvent};
use meshwire_swim::{Behaviour, Config, Event, Realm};
use meshwire_transport::quic::{QuicConfig, QuicTransport};

#[derive(Parser, Debug)]
#[command(about = "A SWIM membership node over meshwire QUIC")]
struct Args {
    /// Address to listen on, e.g. /ip4/10.77.0.1/udp/4001/quic-v1.
    #[arg(long)]
    listen: Multiaddr,
    /// A seed to join through: its address ending in /p2p/<peer id>. Repeatable.
    #[arg(long)]
    seed: Vec<Multiaddr>,
    /// The realm (reverse-DNS name).
    #[arg(long, default_value = "org.example.mesh")]
    realm: Realm,
    /// Protocol period in milliseconds; the probe timeout is half of it and the gossip
    /// interval a fifth (memberlist's ratios).
    #[arg(long, default_value_t = 1000)]
    probe_interval_ms: u64,
    /// Anti-entropy push-pull period in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    push_pull_interval_ms: u64,
    /// How often a node alone in its realm joins through its seeds again, in milliseconds
    /// (0 disables).
    #[arg(long, default_value_t = 10_000)]
    rejoin_interval_ms: u64,
    /// Read commands from standard input (`members`, `leave`); exit at its end.
    #[arg(long)]
    stdin_control: bool,
}

fn seed_of(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), String> {
    match meshwire_transport::split_peer_id(addr, None) {
        Ok((_, Some(peer))) => Ok((peer, addr.clone())),
        _ => Err(format!("seed {addr} must end in /p2p/<peer id>")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let seeds = args
        .seed
        .iter()
        .map(seed_of)
        .collect::<Result<Vec<_>, _>>()?;

    let interval = Duration::from_millis(args.probe_interval_ms.max(10));
    let mut config = Config::default().with_rejoin_interval(
        (args.rejoin_interval_ms > 0).then(|| Duration::from_millis(args.rejoin_interval_ms)),
    );
    config.swim.probe_interval = interval;
    config.swim.probe_timeout = interval / 2;
    config.swim.gossip_interval = Some(interval / 5);
    config.swim.push_pull_interval = Some(Duration::from_millis(args.push_pull_interval_ms.max(1)));

    let key = Keypair::generate();
    let local = key.peer_id();
    let behaviour = Behaviour::new(&key, [args.realm.clone()], config)?;
    let transport = QuicTransport::new(key, QuicConfig::default())?;
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    println!("peer {local}");
    swarm.listen_on(args.listen.clone())?;
    if !seeds.is_empty() {
        swarm.behaviour_mut().join(&args.realm, &seeds)?;
    }

    // Standard input is read on a thread: lines in, `None` at its end.
    let mut stdin = args.stdin_control.then(|| {
        let (tx, rx) = tokio::sync::mpsc::channel::<Option<String>>(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(Some(line)).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(None);
        });
        rx
    });
    loop {
        tokio::select! {
            event = swarm.next_event() => match event {
                SwarmEvent::NewListenAddr { address, .. } => println!("listening {address}"),
                SwarmEvent::Behaviour(e) => print_event(&e),
                _ => {}
            },
            line = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => {
                match line.flatten().as_deref().map(str::trim) {
                    None => return Ok(()),
                    Some("members") => {
                        let live = swarm.behaviour().live_members(&args.realm);
                        let ids: Vec<String> = live.iter().map(|m| m.peer.to_string()).collect();
                        println!("members {} {}", ids.len(), ids.join(" "));
                    }
                    Some("leave") => {
                        swarm.behaviour_mut().leave();
                        // Let the leave datagrams go out.
                        let until = tokio::time::sleep(Duration::from_millis(500));
                        tokio::pin!(until);
                        loop {
                            tokio::select! {
                                _ = &mut until => break,
                                _ = swarm.next_event() => {}
                            }
                        }
                        println!("left");
                        return Ok(());
                    }
                    Some(other) => eprintln!("unknown command {other:?} (members, leave)"),
                }
            }
        }
    }
}

fn print_event(e: &Event) {
    match e {
        Event::MemberJoined { member, .. } => println!("joined {}", member.peer),
        Event::MemberRefuted { member, .. } => println!("alive {}", member.peer),
        Event::MemberSuspected { peer, .. } => println!("suspected {peer}"),
        Event::MemberFailed { peer, .. } => println!("failed {peer}"),
        Event::MemberLeft { peer, .. } => println!("left {peer}"),
        Event::MemberUpdated { member, .. } => println!("updated {}", member.peer),
        Event::JoinFailed { seed, .. } => println!("join-failed {seed}"),
    }
}
