//! The toolkit walkthrough behaviour (`examples/lines.rs`) over real QUIC: lines arrive in
//! order on one stream per peer, the per-peer queue and the line size are bounded, and a peer
//! that cannot be reached is reported.

#[allow(dead_code)]
#[path = "../examples/lines.rs"]
mod lines;

use std::time::Duration;

use lines::Lines;
use meshwire_core::Keypair;
use meshwire_swarm::toolkit::FrameError;
use meshwire_swarm::{StreamError, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};

fn node() -> Swarm<Lines> {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    Swarm::new(transport, Lines::default(), SwarmConfig::default())
}

#[tokio::test]
async fn lines_arrive_in_order_and_bounds_hold() {
    let (mut a, mut b) = (node(), node());
    b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await {
            break address;
        }
    };
    let b_peer = b.local_peer_id();
    a.add_peer_address(b_peer, addr);
    // A line longer than the limit is refused at once.
    assert!(a.behaviour_mut().send(b_peer, vec![b'x'; 1025]).is_err());
    // 32 lines wait for the stream; the 33rd does not fit.
    for i in 0..32 {
        a.behaviour_mut()
            .send(b_peer, format!("line {i}").into_bytes())
            .unwrap();
    }
    assert!(a
        .behaviour_mut()
        .send(b_peer, b"one too many".to_vec())
        .is_err());
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while got.len() < 32 {
            tokio::select! {
                _ = a.next_event() => {}
                ev = b.next_event() => if let SwarmEvent::Behaviour((peer, line)) = ev {
                    assert_eq!(peer, a.local_peer_id());
                    got.push(String::from_utf8(line.unwrap()).unwrap());
                },
            }
        }
    })
    .await
    .expect("all lines delivered");
    let want: Vec<String> = (0..32).map(|i| format!("line {i}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn unreachable_peer_is_reported() {
    let mut a = node();
    let nobody = Keypair::generate().peer_id();
    a.behaviour_mut().send(nobody, b"hello?".to_vec()).unwrap();
    let (peer, result) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let SwarmEvent::Behaviour(ev) = a.next_event().await {
                break ev;
            }
        }
    })
    .await
    .expect("a failure event");
    assert_eq!(peer, nobody);
    assert!(
        matches!(result, Err(FrameError::Stream(StreamError::DialFailed(_)))),
        "{result:?}"
    );
}
