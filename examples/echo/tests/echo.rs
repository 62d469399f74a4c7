//! The downstream echo behaviour composed with ping by the derive macro, over real QUIC:
//! inbound streams reach the field that claims their protocol, stream results reach the field
//! that asked, limits hold.

use std::time::Duration;

use meshwire::core::{Keypair, PeerId};
use meshwire::ping;
use meshwire::swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::transport::with_peer_id;
use meshwire_echo::{Echo, EchoError, EchoEvent, MAX_MESSAGE, PROTOCOL};

#[derive(NetworkBehaviour)]
struct App {
    ping: ping::Behaviour,
    echo: Echo,
}

async fn node() -> (Swarm<App>, meshwire::transport::Multiaddr) {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let app = App {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(50))),
        echo: Echo::new(MAX_MESSAGE),
    };
    let mut s = Swarm::new(transport, app, SwarmConfig::default());
    s.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.next_event().await {
            break address;
        }
    };
    (s, addr)
}

/// Feeds `a`'s behaviour events to `f` until it says stop.
async fn run_until(a: &mut Swarm<App>, mut f: impl FnMut(AppEvent) -> bool) {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let SwarmEvent::Behaviour(ev) = a.next_event().await {
                if f(ev) {
                    return;
                }
            }
        }
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn derived_app_routes_echo_and_ping_to_their_fields() {
    let (mut a, _) = node().await;
    let (mut b, b_addr) = node().await;
    let b_peer: PeerId = b.local_peer_id();
    assert!(a.protocols().contains(&PROTOCOL));
    assert!(a.protocols().contains(&ping::PROTOCOL));
    // b counts what it served; a's replies arrive only after b wrote them.
    let (served_tx, mut served_rx) = tokio::sync::mpsc::unbounded_channel();
    let b_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(AppEvent::Echo(EchoEvent::Served { peer, result })) =
                b.next_event().await
            {
                let _ = served_tx.send((peer, result.is_ok()));
            }
        }
    });
    a.dial(with_peer_id(&b_addr, b_peer)).unwrap();
    let first = a
        .behaviour_mut()
        .echo
        .send(b_peer, b"one".to_vec())
        .unwrap();
    let second = a
        .behaviour_mut()
        .echo
        .send(b_peer, b"two!!".to_vec())
        .unwrap();
    let (mut replies, mut pings) = (Vec::new(), 0);
    run_until(&mut a, |ev| {
        match ev {
            AppEvent::Echo(EchoEvent::Reply { id, result, peer }) => {
                assert_eq!(peer, b_peer);
                replies.push((id, result.expect("echoed").0));
            }
            AppEvent::Echo(other) => panic!("unexpected echo event {other:?}"),
            AppEvent::Ping(ping::Event { result, peer, .. }) => {
                assert_eq!(peer, b_peer);
                result.expect("ping over the derived behaviour");
                pings += 1;
            }
        }
        replies.len() == 2 && pings >= 3
    })
    .await;
    replies.sort_by_key(|(id, _)| *id);
    assert_eq!(
        replies,
        vec![(first, b"one".to_vec()), (second, b"two!!".to_vec())]
    );
    assert!(a.behaviour().ping.rtt(&b_peer).is_some());
    for _ in 0..2 {
        let (peer, ok) = served_rx.recv().await.expect("b reports what it served");
        assert_eq!((peer, ok), (a.local_peer_id(), true));
    }

    // An oversized message is refused before anything is sent.
    let big = a
        .behaviour_mut()
        .echo
        .send(b_peer, vec![0; MAX_MESSAGE as usize + 1])
        .unwrap();
    run_until(&mut a, |ev| match ev {
        AppEvent::Echo(EchoEvent::Reply { id, result, .. }) => {
            assert_eq!(id, big);
            assert!(matches!(result, Err(EchoError::TooLarge)));
            true
        }
        _ => false,
    })
    .await;
    b_task.abort();
}

/// A peer that answers on the echo protocol with other bytes than it got.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "meshwire::request_response::Event<Vec<u8>, Vec<u8>>")]
struct Liar {
    rr: meshwire::request_response::bytes::Behaviour,
}

#[tokio::test]
async fn a_reply_that_differs_from_the_message_is_a_mismatch() {
    use meshwire::request_response::{self as rr, ProtocolSupport};
    let (mut a, _) = node().await;
    let codec = rr::bytes::Codec::new(MAX_MESSAGE, MAX_MESSAGE);
    let liar = rr::Behaviour::with_codec(
        codec,
        [(PROTOCOL, ProtocolSupport::Full)],
        rr::Config::default(),
    )
    .with_responder(|_, mut request: Vec<u8>| {
        request.reverse();
        request
    });
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let mut b = Swarm::new(transport, Liar { rr: liar }, SwarmConfig::default());
    b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let b_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await {
            break address;
        }
    };
    let b_peer = b.local_peer_id();
    let b_task = tokio::spawn(async move {
        loop {
            b.next_event().await;
        }
    });
    a.add_peer_address(b_peer, b_addr);
    // A palindrome comes back equal; anything else does not.
    let same = a
        .behaviour_mut()
        .echo
        .send(b_peer, b"abba".to_vec())
        .unwrap();
    let differs = a
        .behaviour_mut()
        .echo
        .send(b_peer, b"abc".to_vec())
        .unwrap();
    let mut seen = Vec::new();
    run_until(&mut a, |ev| {
        if let AppEvent::Echo(EchoEvent::Reply { id, result, .. }) = ev {
            seen.push((id, result));
        }
        seen.len() == 2
    })
    .await;
    for (id, result) in seen {
        match result {
            Ok((data, _)) => assert_eq!((id, data), (same, b"abba".to_vec())),
            Err(e) => assert!(id == differs && matches!(e, EchoError::Mismatch), "{e}"),
        }
    }
    b_task.abort();
}
