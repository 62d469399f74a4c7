//! One swarm commanded from three tasks at once through clones of its `SwarmHandle`: one
//! dials peers, one protects and tags them in the connection manager, one stores records in
//! the DHT through `with_behaviour`. No channel plumbing of the test's own.

use std::collections::HashSet;
use std::time::Duration;

use meshwire_core::Keypair;
use meshwire_kad::protocol::Record;
use meshwire_kad::{self as kad, QueryResult};
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent, SwarmHandle};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr};
use tokio::sync::mpsc::Receiver;

#[derive(NetworkBehaviour)]
struct App {
    kad: kad::Behaviour,
}

/// A kad node running on its own task; its handle, its events and its full address.
async fn node() -> (SwarmHandle<App>, Receiver<SwarmEvent<AppEvent>>, Multiaddr) {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("transport");
    let config = SwarmConfig {
        idle_connection_timeout: Some(Duration::from_secs(60)),
        ..SwarmConfig::default()
    };
    let app = App {
        kad: kad::Behaviour::new(peer, kad::Config::new()),
    };
    let (handle, mut events) = Swarm::new(transport, app, config).spawn();
    handle
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .await
        .expect("listen");
    let addr = loop {
        if let Some(SwarmEvent::NewListenAddr { address, .. }) = events.recv().await {
            break with_peer_id(&address, peer);
        }
    };
    (handle, events, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tasks_drive_one_swarm_through_its_handle() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (hub, mut hub_events, _) = node().await;
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (h, events, addr) = node().await;
            // Keep the peers' event receivers alive (dropping them is fine too).
            peers.push((h, events, addr));
        }
        let targets: Vec<(meshwire_core::PeerId, Multiaddr)> = peers
            .iter()
            .map(|(h, _, a)| (h.local_peer_id(), a.clone()))
            .collect();

        // Task 1: dials every peer and tells kad where they are.
        let dialer = hub.clone();
        let to_dial = targets.clone();
        let dials = tokio::spawn(async move {
            for (peer, addr) in to_dial {
                dialer.dial(addr.clone()).await.expect("dial starts");
                dialer
                    .with_behaviour(move |b| b.kad.add_address(peer, addr))
                    .await
                    .expect("swarm alive");
            }
        });
        // Task 2: protects and tags the same peers, concurrently.
        let keeper = hub.clone();
        let to_protect = targets.clone();
        let protects = tokio::spawn(async move {
            for (i, (peer, _)) in to_protect.iter().enumerate() {
                keeper.conn_manager().protect(*peer, "app");
                keeper.conn_manager().tag_peer(*peer, "rank", i as i32);
            }
        });
        dials.await.expect("dialer task");
        protects.await.expect("protect task");

        // Task 3: once the peers are connected, stores records in the DHT.
        let mut connected = HashSet::new();
        while connected.len() < 3 {
            if let Some(SwarmEvent::ConnectionEstablished { peer_id, .. }) = hub_events.recv().await
            {
                connected.insert(peer_id);
            }
        }
        let writer = hub.clone();
        let puts = tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..3 {
                let record = Record::new(
                    format!("key-{i}").into_bytes(),
                    format!("value-{i}").into_bytes(),
                );
                let id = writer
                    .with_behaviour(move |b| b.kad.put_record(record, 1))
                    .await
                    .expect("swarm alive")
                    .expect("stored locally");
                ids.push(id);
            }
            ids
        });
        let ids: HashSet<_> = puts.await.expect("put task").into_iter().collect();

        // Every put reaches its quorum of one remote copy.
        let mut done = HashSet::new();
        while done.len() < ids.len() {
            match hub_events.recv().await.expect("hub runs") {
                SwarmEvent::Behaviour(AppEvent::Kad(kad::Event::QueryFinished {
                    id,
                    result: QueryResult::PutValue(result),
                    ..
                })) if ids.contains(&id) => {
                    let ok = result.expect("put reached its quorum");
                    assert!(ok.successes >= 1);
                    done.insert(id);
                }
                _ => {}
            }
        }

        // The swarm and the manager saw every command.
        let conns = hub.connections().await.expect("swarm alive");
        let peers_seen: HashSet<_> = conns.iter().map(|c| c.peer).collect();
        for (peer, _) in &targets {
            assert!(peers_seen.contains(peer));
            assert!(hub.conn_manager().is_protected(*peer, Some("app")));
        }
        let info = hub
            .conn_manager()
            .get_tag_info(targets[2].0)
            .expect("tracked");
        assert_eq!(info.tags.get("rank"), Some(&2));

        // Shut down: the handle then reports the swarm gone.
        hub.shutdown().await.expect("shutdown sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            hub.connections().await,
            Err(meshwire_swarm::HandleError::SwarmGone)
        ));
    })
    .await
    .expect("within the time limit");
}
