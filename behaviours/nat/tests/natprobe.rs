//! The probe protocol on loopback: one server listening on two ports of 127.0.0.1 and on
//! 127.0.0.2, dialing back from another port and another IP; a detector on 127.0.0.1.

use std::time::Duration;

use meshwire_core::Keypair;
use meshwire_nat::wire::{DialBackFrom, DialBackStatus, Request, Response};
use meshwire_nat::{
    DetectorConfig, DetectorEvent, Filtering, Mapping, NatDetector, NatProbeMetrics,
    NatProbeServer, Observer, ServerConfig, ServerEvent,
};
use meshwire_swarm::{Multiaddr, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Transport;

fn quic() -> QuicTransport {
    QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap()
}

/// A transport bound to `ip` (port chosen by the system).
fn bound(ip: &str) -> QuicTransport {
    let mut t = quic();
    t.listen_on(format!("/ip4/{ip}/udp/0/quic-v1").parse().unwrap())
        .unwrap();
    t
}

async fn listen(swarm: &mut Swarm<impl meshwire_swarm::NetworkBehaviour>, ip: &str) -> Multiaddr {
    swarm
        .listen_on(format!("/ip4/{ip}/udp/0/quic-v1").parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            return address;
        }
    }
}

/// A server on 127.0.0.1 (two ports) and 127.0.0.2, with the dial-backs `server` allows.
async fn server(server: NatProbeServer) -> (Swarm<NatProbeServer>, Vec<Observer>) {
    let mut s = Swarm::new(quic(), server, SwarmConfig::default());
    let peer = s.local_peer_id();
    let mut observers = Vec::new();
    for ip in ["127.0.0.1", "127.0.0.1", "127.0.0.2"] {
        let addr = listen(&mut s, ip).await;
        observers.push(Observer { peer, addr });
    }
    (s, observers)
}

/// Runs both swarms until the detector reports; returns its event and the server's events.
async fn detect(
    server: &mut Swarm<NatProbeServer>,
    client: &mut Swarm<NatDetector>,
) -> (DetectorEvent, Vec<ServerEvent>) {
    let mut served = Vec::new();
    let run = async {
        loop {
            tokio::select! {
                ev = server.next_event() => if let SwarmEvent::Behaviour(e) = ev { served.push(e) },
                ev = client.next_event() => if let SwarmEvent::Behaviour(e) = ev { return e },
            }
        }
    };
    let event = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("detection within 20 s");
    (event, served)
}

fn client(observers: Vec<Observer>) -> Swarm<NatDetector> {
    let config = DetectorConfig {
        observers,
        ..DetectorConfig::default()
    };
    Swarm::new(quic(), NatDetector::new(config), SwarmConfig::default())
}

#[tokio::test]
async fn loopback_is_no_nat_with_endpoint_independent_filtering() {
    let probe = NatProbeServer::default()
        .with_dial_back(DialBackFrom::OtherPort, bound("127.0.0.1"))
        .with_dial_back(DialBackFrom::OtherAddress, bound("127.0.0.2"));
    let (mut s, observers) = server(probe).await;
    let mut c = client(observers.clone());
    assert_eq!(c.behaviour().nat_profile(), None);
    let shared = c.behaviour().shared_profile();
    let local = listen(&mut c, "127.0.0.1").await;
    let (event, served) = detect(&mut s, &mut c).await;
    let DetectorEvent::Detected {
        profile,
        observations,
    } = event
    else {
        panic!("not detected: {event:?}");
    };
    assert_eq!(profile.mapping, Mapping::None);
    assert_eq!(profile.filtering, Filtering::EndpointIndependent);
    assert!(profile.port_preserving);
    assert_eq!(observations.mappings.len(), 3);
    let local = meshwire_transport::quic::multiaddr_to_socketaddr(&local).unwrap();
    for (m, o) in observations.mappings.iter().zip(&observers) {
        assert_eq!(m.mapped, local, "each observer saw our listening socket");
        assert_eq!(
            Some(m.server),
            meshwire_transport::quic::multiaddr_to_socketaddr(&o.addr)
        );
    }
    assert_eq!(observations.from_other_port, Some(true));
    assert_eq!(observations.from_other_address, Some(true));
    assert_eq!(c.behaviour().nat_profile(), Some(profile));
    assert_eq!(
        shared.get(),
        Some(profile),
        "the shared handle follows the detector"
    );
    let asked: Vec<Request> = served
        .iter()
        .filter_map(|e| e.outcome.as_ref().ok().map(|(r, _)| *r))
        .collect();
    assert_eq!(asked.iter().filter(|r| **r == Request::Observe).count(), 3);

    // Another local address is another network: the cached profile is not served for it,
    // and a detection runs for it.
    let _second = listen(&mut c, "127.0.0.1").await;
    assert_eq!(c.behaviour().nat_profile(), None);
    assert_eq!(shared.get(), None);
    let (event, served) = detect(&mut s, &mut c).await;
    assert!(served.len() >= 3, "the server was asked again");
    assert!(
        matches!(event, DetectorEvent::Detected { profile: p, .. } if p == profile),
        "{event:?}"
    );
    assert_eq!(c.behaviour().nat_profile(), Some(profile));
    assert_eq!(shared.get(), Some(profile));
    assert_eq!(shared.version(), 3, "set, cleared, set again");
}

#[tokio::test]
async fn refused_and_unavailable_dial_backs_leave_filtering_unknown() {
    // No dial-back per second allowed; no other-address socket at all.
    let config = ServerConfig {
        dial_backs_per_second: 0,
        ..ServerConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = NatProbeMetrics::register(&mut registry);
    let probe = NatProbeServer::new(config)
        .with_dial_back(DialBackFrom::OtherPort, bound("127.0.0.1"))
        .with_metrics(metrics.clone());
    let (mut s, observers) = server(probe).await;
    let config = DetectorConfig {
        observers,
        retry_after: Duration::from_millis(200),
        ..DetectorConfig::default()
    };
    let detector = NatDetector::new(config).with_metrics(metrics);
    let mut c = Swarm::new(quic(), detector, SwarmConfig::default());
    listen(&mut c, "127.0.0.1").await;
    let (event, served) = detect(&mut s, &mut c).await;
    let DetectorEvent::Detected {
        profile,
        observations,
    } = event
    else {
        panic!("not detected: {event:?}");
    };
    assert_eq!(profile.mapping, Mapping::None);
    assert_eq!(profile.filtering, Filtering::Unknown);
    assert_eq!(observations.from_other_port, None);
    let answers: Vec<Response> = served
        .iter()
        .filter_map(|e| e.outcome.as_ref().ok().map(|(_, r)| *r))
        .collect();
    assert!(answers.contains(&Response::DialBack(DialBackStatus::Refused)));
    assert!(answers.contains(&Response::DialBack(DialBackStatus::Unavailable)));
    // Refused: the next round comes after `retry_after`, not `refresh_after` (10 min).
    let (again, _) = detect(&mut s, &mut c).await;
    assert!(matches!(again, DetectorEvent::Detected { .. }), "{again:?}");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"natprobe_requests_total{request="observe",result="observed"} 6"#,
        r#"natprobe_requests_total{request="dial_back_other_port",result="refused"} 2"#,
        r#"natprobe_requests_total{request="dial_back_other_address",result="unavailable"} 2"#,
        r#"natprobe_detections_total{result="detected"} 2"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn too_few_observers_is_a_typed_failure() {
    let (mut s, observers) = server(NatProbeServer::default()).await;
    let mut c = client(observers[..2].to_vec());
    listen(&mut c, "127.0.0.1").await;
    let (event, _) = detect(&mut s, &mut c).await;
    assert_eq!(
        event,
        DetectorEvent::Failed(meshwire_nat::ClassifyError::NotEnoughMappings)
    );
    assert_eq!(c.behaviour().nat_profile(), None);
}

#[tokio::test]
async fn stale_profile_is_served_while_a_background_refresh_runs() {
    let probe = NatProbeServer::default()
        .with_dial_back(DialBackFrom::OtherPort, bound("127.0.0.1"))
        .with_dial_back(DialBackFrom::OtherAddress, bound("127.0.0.2"));
    let (mut s, observers) = server(probe).await;
    let config = DetectorConfig {
        observers,
        cache: meshwire_nat::CacheConfig {
            refresh_after: Duration::from_millis(300),
            max_age: Duration::from_secs(60),
            max_networks: 4,
        },
        ..DetectorConfig::default()
    };
    let mut c = Swarm::new(quic(), NatDetector::new(config), SwarmConfig::default());
    listen(&mut c, "127.0.0.1").await;
    let (first, _) = detect(&mut s, &mut c).await;
    let DetectorEvent::Detected { profile, .. } = first else {
        panic!("not detected: {first:?}");
    };
    // Nothing asked of the detector: past `refresh_after` it asks the servers again by
    // itself, and the profile stays served meanwhile.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        c.behaviour().nat_profile(),
        Some(profile),
        "stale, still served"
    );
    let (second, served) = detect(&mut s, &mut c).await;
    assert!(
        matches!(second, DetectorEvent::Detected { profile: p, .. } if p == profile),
        "{second:?}"
    );
    assert!(served.len() >= 3, "the refresh asked the server again");
    assert_eq!(c.behaviour().nat_profile(), Some(profile));
}

#[tokio::test]
async fn a_silent_observer_ends_the_round_at_its_deadline() {
    let (mut s, mut observers) = server(NatProbeServer::default()).await;
    // Observer 1 is a UDP socket that never answers: its dial hangs until the round's
    // deadline, (3 observers + 2) × request_timeout.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    observers[1].addr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap();
    let config = DetectorConfig {
        observers,
        request_timeout: Duration::from_millis(200),
        ..DetectorConfig::default()
    };
    let mut c = Swarm::new(quic(), NatDetector::new(config), SwarmConfig::default());
    listen(&mut c, "127.0.0.1").await;
    let started = std::time::Instant::now();
    let (event, _) = detect(&mut s, &mut c).await;
    assert_eq!(
        event,
        DetectorEvent::Failed(meshwire_nat::ClassifyError::NotEnoughMappings)
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}
