//! The victim of the hostile-peer tests: a default node — ping, identify and kademlia with
//! default configs and the default resource limits — that prints `listening <addr>/p2p/<id>`
//! once and then a [`hostile_tests::Status`] line every 200 ms.
//!
//! `victim [--listen <multiaddr>] [--echo-timeout-ms <ms>] [--watermarks <low>:<high>]
//! [--flood-headroom <n>|off] [--memory-mib <n>]`: the tests shorten ping's echo time limit
//! so that a defence's effect shows within a short run, or turn one defence off (the
//! connection manager's flood rule) and give the resource manager the limits of a given
//! memory budget (`Limits::for_memory`, instead of an eighth of the machine's memory) so
//! that another defence's effect shows the same on every machine.

use std::time::{Duration, Instant};

use hostile_tests::{self_usage, Status};
use meshwire::connmgr::{self, BasicConnMgr, ConnManagerHandle, ConnMgrMetrics};
use meshwire::core::Keypair;
use meshwire::swarm::rcmgr::Limits;
use meshwire::swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::{identify, kad, ping};

#[derive(NetworkBehaviour)]
struct Node {
    ping: ping::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "/ip4/127.0.0.1/udp/0/quic-v1".to_string();
    let mut ping_config = ping::Config::default();
    let mut cm_config = connmgr::Config::default();
    let mut swarm_config = SwarmConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "--echo-timeout-ms" => {
                let ms: u64 = args
                    .next()
                    .ok_or("--echo-timeout-ms needs a value")?
                    .parse()?;
                ping_config = ping_config.with_echo_timeout(Duration::from_millis(ms));
            }
            "--watermarks" => {
                let (low, high) = args
                    .next()
                    .ok_or("--watermarks needs low:high")?
                    .split_once(':')
                    .map(|(l, h)| (l.parse::<usize>(), h.parse::<usize>()))
                    .ok_or("--watermarks needs low:high")?;
                cm_config.low_water = low?;
                cm_config.high_water = high?;
            }
            "--flood-headroom" => {
                cm_config.flood_headroom = match args.next().as_deref() {
                    Some("off") => None,
                    Some(n) => Some(n.parse()?),
                    None => return Err("--flood-headroom needs a value or off".into()),
                };
            }
            "--memory-mib" => {
                let mib: u64 = args.next().ok_or("--memory-mib needs a value")?.parse()?;
                swarm_config.resource_limits = Limits::for_memory(mib << 20);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let key = Keypair::generate();
    let peer = key.peer_id();
    let node = Node {
        ping: ping::Behaviour::new(ping_config),
        identify: identify::Behaviour::new(identify::Config::new(
            identify::DEFAULT_PROTOCOL_VERSION,
            key.public(),
        )),
        kad: kad::Behaviour::new(peer, kad::Config::default()),
    };
    let transport = QuicTransport::new(key, QuicConfig::default())?;
    let mut registry = prometheus_client::registry::Registry::default();
    // The default connection manager (what `Swarm::new` makes), with its metrics.
    let cm_metrics = ConnMgrMetrics::register(&mut registry);
    let cm = BasicConnMgr::new(cm_config, Instant::now())?.with_metrics(cm_metrics.clone());
    let cm = ConnManagerHandle::new(cm);
    let mut swarm = Swarm::with_conn_manager(transport, node, swarm_config, cm.to_dyn());
    let metrics = swarm.register_metrics(&mut registry);
    swarm.listen_on(listen.parse()?)?;

    let mut status = Status::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            event = swarm.next_event() => match event {
                SwarmEvent::NewListenAddr { address, .. } => println!("listening {address}/p2p/{peer}"),
                SwarmEvent::Behaviour(NodeEvent::Kad(kad::Event::InboundFailure { .. })) => {
                    status.kad_inbound_failures += 1;
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(
                    identify::Event::Received { info, .. } | identify::Event::Pushed { info, .. },
                )) => {
                    status.max_peer_addrs = status.max_peer_addrs.max(info.listen_addrs.len() as u64);
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Error { .. })) => {
                    status.identify_errors += 1;
                }
                // Our own pings of the attackers are of no interest.
                SwarmEvent::Behaviour(NodeEvent::Ping(event)) => drop(event),
                _ => {}
            },
            _ = tick.tick() => {
                let (rss, cpu) = self_usage();
                let usage = swarm.resource_manager().system_usage();
                status.rss_kib = rss;
                status.cpu_ticks = cpu;
                status.conns = usage.conns().into();
                status.streams = usage.streams().into();
                status.refused = metrics.resources.refused_total();
                status.echo_timeouts = swarm.behaviour().ping.echo_timeouts();
                status.pushes_delayed = swarm.behaviour().identify.pushes_delayed();
                status.inbound_stream_errors = metrics.inbound_stream_errors.get();
                status.trimmed = metrics.connections_trimmed.get();
                status.inbound_streams = metrics.inbound_streams.get();
                status.flood_trimmed = cm_metrics.connections_flood_trimmed();
                status.incoming_errors = metrics.incoming_connection_errors.get();
                println!("{}", status.to_line());
            }
        }
    }
}
