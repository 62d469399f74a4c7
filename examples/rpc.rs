//! RPC on loopback: a provider registers `org.example.greeter.hello`, a caller that knows
//! only a bootstrap node finds it through the DHT and calls it from another task through
//! its `SwarmHandle`.
//!
//! ```sh
//! cargo run --example rpc --features rpc
//! # boot      12D3KooW…abcdef at /ip4/127.0.0.1/udp/.../quic-v1
//! # provider  12D3KooW…123456 serves org.example.greeter.hello
//! # caller    hello, ada (1.2ms)
//! # caller    hello, ada (cached, 4µs)
//! # caller    org.example.greeter.missing: no providers
//! ```
//!
//! `--calls N` sets how many calls to make (default 3).

use std::time::{Duration, Instant};

use clap::Parser;
use meshwire::prelude::*;
use meshwire::rpc::{self, CallError, CallOpts, ProcedureName};

#[derive(Parser, Debug)]
#[command(about = "A provider and a caller finding it through the DHT")]
struct Args {
    /// Calls to make.
    #[arg(long, default_value_t = 3)]
    calls: usize,
}

#[derive(NetworkBehaviour)]
struct Node {
    ping: ping::Behaviour,
    rpc: rpc::Behaviour,
}

/// A node listening on loopback, running on its own task: its handle and address.
async fn node() -> Result<(SwarmHandle<Node>, PeerId, Multiaddr), Box<dyn std::error::Error>> {
    let mut swarm = SwarmBuilder::with_new_identity()
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
        .build(|ctx| {
            let ping = ping::Behaviour::new(ping::Config::new());
            let dht = kad::Behaviour::new(ctx.peer_id(), kad::Config::default());
            let rpc =
                rpc::Behaviour::new(dht, rpc::Config::default()).with_rtt_table(ping.rtt_table());
            Node { ping, rpc }
        })?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let peer = swarm.local_peer_id();
    let (handle, mut events) = swarm.spawn();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                SwarmEvent::Behaviour(NodeEvent::Rpc(rpc::Event::InboundFailure {
                    peer,
                    error,
                })) => {
                    eprintln!("{}: a request failed: {error}", short(&peer))
                }
                SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event {
                    peer,
                    result: Err(error),
                    ..
                })) => eprintln!("{}: ping failed: {error}", short(&peer)),
                _ => {}
            }
        }
    });
    Ok((handle, peer, addr))
}

/// Joins the DHT through `boot`.
async fn join(
    handle: &SwarmHandle<Node>,
    boot: PeerId,
    addr: Multiaddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let a = addr.clone();
    handle
        .with_behaviour(move |b| {
            b.rpc.kad_mut().add_address(boot, a);
            b.rpc.kad_mut().bootstrap().map(|_| ())
        })
        .await??;
    handle.dial(with_peer_id(&addr, boot)).await?;
    Ok(())
}

fn short(peer: &PeerId) -> String {
    let s = peer.to_string();
    format!("{}…{}", &s[..8], &s[s.len() - 6..])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let hello: ProcedureName = "org.example.greeter.hello".parse()?;

    let (_boot, boot_id, boot_addr) = node().await?;
    println!("boot      {} at {boot_addr}", short(&boot_id));

    // The provider: one handler, announced in the DHT by `register`.
    let (provider, provider_id, _) = node().await?;
    join(&provider, boot_id, boot_addr.clone()).await?;
    let name = hello.clone();
    provider
        .with_behaviour(move |b| {
            b.rpc.register(name, |payload: Vec<u8>| async move {
                let who = String::from_utf8(payload).map_err(|_| "not UTF-8".to_string())?;
                Ok(format!("hello, {who}").into_bytes())
            })
        })
        .await??;
    println!("provider  {} serves {hello}", short(&provider_id));

    // The caller: knows only the bootstrap node.
    let (caller, _, _) = node().await?;
    join(&caller, boot_id, boot_addr).await?;
    let opts = CallOpts::default()
        .idempotent()
        .with_timeout(Duration::from_secs(2));
    let mut made = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while made < args.calls {
        let (name, o) = (hello.clone(), opts.clone());
        let started = Instant::now();
        let result = caller
            .with_behaviour(move |b| b.rpc.call_async(name, b"ada".to_vec(), o))
            .await?
            .await;
        match result {
            Ok(bytes) => {
                let cached = if made > 0 { "cached, " } else { "" };
                println!(
                    "caller    {} ({cached}{:?})",
                    String::from_utf8_lossy(&bytes),
                    started.elapsed()
                );
                made += 1;
            }
            // The provider's announcement may still be on its way.
            Err(CallError::NoProviders) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }

    let missing: ProcedureName = "org.example.greeter.missing".parse()?;
    let m = missing.clone();
    let result = caller
        .with_behaviour(move |b| b.rpc.call_async(m, Vec::new(), CallOpts::default()))
        .await?
        .await;
    match result {
        Err(e) => println!("caller    {missing}: {e}"),
        Ok(_) => return Err("a name nobody serves answered".into()),
    }
    Ok(())
}
