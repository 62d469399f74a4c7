//! Chatter: nodes on loopback chat in rooms (`chat.lobby`, `chat.kitchen`) of the realm
//! `org.example.chatter`, and a watcher subscribed to the pattern `chat.#` sees every room,
//! including rooms first used after it subscribed, with no per-room setup.
//!
//! ```sh
//! cargo run --example chat --features pubsub
//! # watcher  watches chat.#
//! # alice    joined chat.lobby
//! # bob      joined chat.lobby
//! # carol    joined chat.kitchen
//! # bob      [chat.lobby] hello from alice (1)
//! # watcher  [chat.lobby] hello from alice (1)
//! # watcher  [chat.kitchen] hello from carol (1)
//! # ...
//! # watcher  saw 6 of 6 messages, each once
//! ```
//!
//! `--lines N` sets how many lines each chatter sends (default 2).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clap::Parser;
use meshwire::prelude::*;
use meshwire::pubsub::topic::{Pattern, Realm, TopicName};
use meshwire::pubsub::{self, PublishError};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Chat rooms on gossipsub with a wildcard watcher")]
struct Args {
    /// Lines each chatter sends.
    #[arg(long, default_value_t = 2)]
    lines: usize,
}

/// A message as a node saw it: (node name, room, text).
type Seen = (&'static str, String, String);

/// A node listening on loopback on its own task; its messages go to `seen`.
async fn node(
    name: &'static str,
    seen: mpsc::UnboundedSender<Seen>,
) -> Result<(SwarmHandle<pubsub::Behaviour>, PeerId, Multiaddr), Box<dyn std::error::Error>> {
    let config = pubsub::Config::default()
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_heartbeat_initial_delay(Duration::from_millis(100));
    let mut swarm = SwarmBuilder::with_new_identity()
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
        .try_build(|ctx| pubsub::Behaviour::new(ctx.key(), config))?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let peer = swarm.local_peer_id();
    let (handle, mut events) = swarm.spawn();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let SwarmEvent::Behaviour(pubsub::Event::Message { message, .. }) = event {
                // The wire topic is `<realm>/<room>`.
                let topic = message.topic.as_str();
                let room = topic.split_once('/').map_or(topic, |(_, r)| r).to_string();
                let text = String::from_utf8_lossy(&message.data).into_owned();
                if seen.send((name, room, text)).is_err() {
                    return;
                }
            }
        }
    });
    Ok((handle, peer, addr))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let realm: Realm = "org.example.chatter".parse()?;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();

    let names = ["alice", "bob", "carol", "watcher"];
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(node(name, seen_tx.clone()).await?);
    }
    // Everyone dials everyone (a small room of neighbours).
    for a in 0..nodes.len() {
        for b in a + 1..nodes.len() {
            let (peer, addr) = (nodes[b].1, nodes[b].2.clone());
            nodes[a].0.dial(with_peer_id(&addr, peer)).await?;
        }
    }

    let rooms: [(usize, TopicName); 3] = [
        (0, "chat.lobby".parse()?),
        (1, "chat.lobby".parse()?),
        (2, "chat.kitchen".parse()?),
    ];
    let pattern: Pattern = "chat.#".parse()?;
    let (r, p) = (realm.clone(), pattern.clone());
    nodes[3]
        .0
        .with_behaviour(move |b| b.subscribe_pattern(&r, &p))
        .await?;
    println!("{:<8} watches {pattern}", names[3]);
    for (i, room) in &rooms {
        let (r, t) = (realm.clone(), room.clone());
        nodes[*i]
            .0
            .with_behaviour(move |b| b.subscribe_topic(&r, &t))
            .await?;
        println!("{:<8} joined {room}", names[*i]);
    }

    // Wait until alice and bob know each other in the lobby, so both see every lobby line.
    let lobby = meshwire::pubsub::topic::wire_topic(&realm, &rooms[0].1);
    for (i, _) in &rooms[..2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = lobby.clone();
            let known = nodes[*i]
                .0
                .with_behaviour(move |b| b.engine().topic_peers(&t).count())
                .await?;
            if known > 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Each chatter sends its lines, retrying while its room has nobody to send to yet.
    let mut sent = 0;
    for line in 1..=args.lines {
        for (i, room) in &rooms {
            let text = format!("hello from {} ({line})", names[*i]);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (r, t, d) = (realm.clone(), room.clone(), text.clone());
                match nodes[*i]
                    .0
                    .with_behaviour(move |b| b.publish_topic(&r, &t, d))
                    .await?
                {
                    Ok(_) => break,
                    Err(PublishError::NoPeersSubscribedToTopic) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            sent += 1;
        }
    }

    // Print what arrives until the watcher has every line and alice and bob each other's
    // (or 10 s pass).
    let mut watched = HashSet::new();
    let mut chatted = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while watched.len() < sent || chatted < 2 * args.lines {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some((who, room, text))) => {
                println!("{who:<8} [{room}] {text}");
                if who != "watcher" {
                    chatted += 1;
                }
                if who == "watcher" && !watched.insert((room, text)) {
                    return Err("the watcher saw a message twice".into());
                }
            }
            _ => break,
        }
    }
    println!(
        "watcher  saw {} of {sent} messages, each once",
        watched.len()
    );
    if watched.len() < sent {
        return Err("the watcher missed messages".into());
    }
    Ok(())
}
