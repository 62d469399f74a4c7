//! meshwire's request-response against rust-libp2p 0.57's (`libp2p-request-response`) on
//! loopback QUIC, with the JSON and the CBOR codec: meshwire asks rust-libp2p, rust-libp2p
//! asks meshwire, and each side checks the exact request and response it got. Also: both
//! codecs write the same bytes as rust-libp2p's, and failures (a dropped response channel,
//! an unsupported protocol) are reported across the two implementations.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response as lp_rr;
use libp2p::swarm::SwarmEvent as LpSwarmEvent;
use libp2p::SwarmBuilder;
use meshwire_core::{Keypair, PeerId};
use meshwire_request_response as mw_rr;
use meshwire_swarm::{StreamProtocol, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Multiaddr;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);
const PROTOCOL: &str = "/interop/greet/1.0.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greet {
    name: String,
    times: u32,
    tags: Vec<String>,
    signed: i64,
    maybe: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reply {
    text: String,
    /// Large enough to span many QUIC packets.
    payload: Vec<u8>,
}

fn greet(name: &str) -> Greet {
    Greet {
        name: name.into(),
        times: 3,
        tags: vec!["α".into(), "".into(), "tag with spaces".into()],
        signed: -42,
        maybe: Some(false),
    }
}

fn reply_to(g: &Greet) -> Reply {
    Reply {
        text: format!("hello {} x{}", g.name, g.times),
        payload: (0..100_000u32).map(|i| (i % 251) as u8).collect(),
    }
}

type MwBehaviour<C> = mw_rr::Behaviour<C>;
type LpBehaviour<C> = lp_rr::Behaviour<C>;

fn lp_peer(p: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(p.as_bytes()).expect("peer id bytes")
}

fn mw_peer(p: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(&p.to_bytes()).expect("peer id bytes")
}

fn mw_addr(a: &libp2p::Multiaddr) -> Multiaddr {
    a.to_string().parse().expect("address")
}

fn lp_addr(a: &Multiaddr) -> libp2p::Multiaddr {
    a.to_string().parse().expect("address")
}

async fn meshwire_node<C: mw_rr::Codec>(
    behaviour: MwBehaviour<C>,
) -> (Swarm<MwBehaviour<C>>, Multiaddr) {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    (swarm, addr)
}

async fn libp2p_node<C>(
    behaviour: LpBehaviour<C>,
) -> (libp2p::Swarm<LpBehaviour<C>>, libp2p::Multiaddr)
where
    C: lp_rr::Codec + Clone + Send + 'static,
{
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let LpSwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    (swarm, addr)
}

/// Either side's request-response event.
enum Ev<MwEvent, LpEvent> {
    Mw(MwEvent),
    Lp(LpEvent),
}

type MwEv<C> = mw_rr::BehaviourEvent<C, ()>;
type LpEv<C> = lp_rr::Event<<C as lp_rr::Codec>::Request, <C as lp_rr::Codec>::Response>;

/// Both swarms, driven in the test task.
struct Nodes<M: mw_rr::Codec, L: lp_rr::Codec + Clone + Send + 'static> {
    mw: Swarm<MwBehaviour<M>>,
    mw_addr: Multiaddr,
    lp: libp2p::Swarm<LpBehaviour<L>>,
    lp_addr: libp2p::Multiaddr,
}

impl<M, L> Nodes<M, L>
where
    M: mw_rr::Codec,
    L: lp_rr::Codec + Clone + Send + 'static,
    L::Request: Debug,
    L::Response: Debug,
    M::Request: Debug,
    M::Response: Debug,
{
    async fn new(mw: MwBehaviour<M>, lp: LpBehaviour<L>) -> Self {
        let (mw, mw_addr) = meshwire_node(mw).await;
        let (lp, lp_addr) = libp2p_node(lp).await;
        Nodes {
            mw,
            mw_addr,
            lp,
            lp_addr,
        }
    }

    fn mw_id(&self) -> PeerId {
        self.mw.local_peer_id()
    }

    fn lp_id(&self) -> libp2p::PeerId {
        *self.lp.local_peer_id()
    }

    /// The next request-response event of either side; panics on a dial failure or after
    /// [`WAIT`].
    async fn next(&mut self) -> Ev<MwEv<M>, LpEv<L>> {
        let step = async {
            loop {
                tokio::select! {
                    ev = self.mw.next_event() => match ev {
                        SwarmEvent::Behaviour(e) => return Ev::Mw(e),
                        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("meshwire dial: {error}"),
                        _ => {}
                    },
                    ev = self.lp.select_next_some() => match ev {
                        LpSwarmEvent::Behaviour(e) => return Ev::Lp(e),
                        LpSwarmEvent::OutgoingConnectionError { error, .. } => panic!("libp2p dial: {error}"),
                        _ => {}
                    },
                }
            }
        };
        tokio::time::timeout(WAIT, step)
            .await
            .expect("no event in time")
    }
}

/// meshwire asks rust-libp2p (dialing it), then rust-libp2p asks meshwire (dialing it, on a
/// fresh pair), each checking the exact request and response.
async fn both_directions<M, L>(mw: impl Fn() -> MwBehaviour<M>, lp: impl Fn() -> LpBehaviour<L>)
where
    M: mw_rr::Codec<Request = Greet, Response = Reply>,
    L: lp_rr::Codec<Request = Greet, Response = Reply> + Clone + Send + 'static,
{
    // ---- meshwire asks rust-libp2p -------------------------------------------------------
    let mut n = Nodes::new(mw(), lp()).await;
    let (mw_id, lp_id) = (n.mw_id(), n.lp_id());
    n.mw.add_peer_address(mw_peer(&lp_id), mw_addr(&n.lp_addr));
    let id =
        n.mw.behaviour_mut()
            .send_request(mw_peer(&lp_id), greet("ada"));
    let (mut answered, mut sent) = (false, false);
    while !(answered && sent) {
        match n.next().await {
            Ev::Lp(lp_rr::Event::Message {
                peer,
                message:
                    lp_rr::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                assert_eq!(peer, lp_peer(&mw_id));
                assert_eq!(request, greet("ada"), "libp2p decoded meshwire's request");
                n.lp.behaviour_mut()
                    .send_response(channel, reply_to(&request))
                    .expect("channel open");
            }
            Ev::Lp(lp_rr::Event::ResponseSent { .. }) => sent = true,
            Ev::Mw(mw_rr::Event::Message {
                peer,
                message:
                    mw_rr::Message::Response {
                        request_id,
                        response,
                        ..
                    },
                ..
            }) => {
                assert_eq!((peer, request_id), (mw_peer(&lp_id), id));
                assert_eq!(
                    response,
                    reply_to(&greet("ada")),
                    "meshwire decoded libp2p's response"
                );
                answered = true;
            }
            Ev::Mw(other) => panic!("meshwire: {other:?}"),
            Ev::Lp(other) => panic!("libp2p: {other:?}"),
        }
    }

    // ---- rust-libp2p asks meshwire -------------------------------------------------------
    let mut n = Nodes::new(mw(), lp()).await;
    let (mw_id, lp_id) = (n.mw_id(), n.lp_id());
    let addr = lp_addr(&n.mw_addr);
    n.lp.add_peer_address(lp_peer(&mw_id), addr);
    let id =
        n.lp.behaviour_mut()
            .send_request(&lp_peer(&mw_id), greet("bob"));
    let (mut answered, mut sent) = (false, false);
    while !(answered && sent) {
        match n.next().await {
            Ev::Mw(mw_rr::Event::Message {
                peer,
                message:
                    mw_rr::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                assert_eq!(peer, mw_peer(&lp_id));
                assert_eq!(request, greet("bob"), "meshwire decoded libp2p's request");
                n.mw.behaviour_mut()
                    .send_response(channel, reply_to(&request))
                    .expect("channel open");
            }
            Ev::Mw(mw_rr::Event::ResponseSent { .. }) => sent = true,
            Ev::Lp(lp_rr::Event::Message {
                peer,
                message:
                    lp_rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => {
                assert_eq!((peer, request_id), (lp_peer(&mw_id), id));
                assert_eq!(
                    response,
                    reply_to(&greet("bob")),
                    "libp2p decoded meshwire's response"
                );
                answered = true;
            }
            Ev::Mw(other) => panic!("meshwire: {other:?}"),
            Ev::Lp(other) => panic!("libp2p: {other:?}"),
        }
    }
}

fn mw_json() -> MwBehaviour<mw_rr::json::Codec<Greet, Reply>> {
    mw_rr::json::Behaviour::new(
        [(StreamProtocol::new(PROTOCOL), mw_rr::ProtocolSupport::Full)],
        mw_rr::Config::default(),
    )
}

fn lp_json() -> LpBehaviour<lp_rr::json::codec::Codec<Greet, Reply>> {
    lp_rr::json::Behaviour::new(
        [(
            libp2p::StreamProtocol::new(PROTOCOL),
            lp_rr::ProtocolSupport::Full,
        )],
        lp_rr::Config::default(),
    )
}

fn mw_cbor() -> MwBehaviour<mw_rr::cbor::Codec<Greet, Reply>> {
    mw_rr::cbor::Behaviour::new(
        [(StreamProtocol::new(PROTOCOL), mw_rr::ProtocolSupport::Full)],
        mw_rr::Config::default(),
    )
}

fn lp_cbor() -> LpBehaviour<lp_rr::cbor::codec::Codec<Greet, Reply>> {
    lp_rr::cbor::Behaviour::new(
        [(
            libp2p::StreamProtocol::new(PROTOCOL),
            lp_rr::ProtocolSupport::Full,
        )],
        lp_rr::Config::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_json_both_directions() {
    both_directions(mw_json, lp_json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_cbor_both_directions() {
    both_directions(mw_cbor, lp_cbor).await;
}

#[tokio::test]
async fn request_response_codecs_write_rust_libp2ps_bytes() {
    use lp_rr::Codec as _;
    use mw_rr::Codec as _;
    let request = greet("ada");
    let response = reply_to(&request);
    let (mw_p, lp_p) = (
        StreamProtocol::new(PROTOCOL),
        libp2p::StreamProtocol::new(PROTOCOL),
    );

    let (mut mw_bytes, mut lp_bytes) = (Vec::new(), Vec::new());
    let mut mw = mw_rr::json::Codec::<Greet, Reply>::default();
    let mut lp = lp_rr::json::codec::Codec::<Greet, Reply>::default();
    mw.write_request(&mw_p, &mut mw_bytes, request.clone())
        .await
        .unwrap();
    lp.write_request(&lp_p, &mut lp_bytes, request.clone())
        .await
        .unwrap();
    assert_eq!(mw_bytes, lp_bytes, "JSON request");
    let (mut mw_bytes, mut lp_bytes) = (Vec::new(), Vec::new());
    mw.write_response(&mw_p, &mut mw_bytes, response.clone())
        .await
        .unwrap();
    lp.write_response(&lp_p, &mut lp_bytes, response.clone())
        .await
        .unwrap();
    assert_eq!(mw_bytes, lp_bytes, "JSON response");

    let (mut mw_bytes, mut lp_bytes) = (Vec::new(), Vec::new());
    let mut mw = mw_rr::cbor::Codec::<Greet, Reply>::default();
    let mut lp = lp_rr::cbor::codec::Codec::<Greet, Reply>::default();
    mw.write_request(&mw_p, &mut mw_bytes, request.clone())
        .await
        .unwrap();
    lp.write_request(&lp_p, &mut lp_bytes, request.clone())
        .await
        .unwrap();
    assert_eq!(mw_bytes, lp_bytes, "CBOR request");
    let (mut mw_bytes, mut lp_bytes) = (Vec::new(), Vec::new());
    mw.write_response(&mw_p, &mut mw_bytes, response.clone())
        .await
        .unwrap();
    lp.write_response(&lp_p, &mut lp_bytes, response.clone())
        .await
        .unwrap();
    assert_eq!(mw_bytes, lp_bytes, "CBOR response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_failures_cross_implementations() {
    // rust-libp2p drops the channel: it closes the stream without a response, so meshwire's
    // JSON codec reads an empty message — a typed failure, long before the timeout.
    let mut n = Nodes::new(mw_json(), lp_json()).await;
    let lp_id = n.lp_id();
    n.mw.add_peer_address(mw_peer(&lp_id), mw_addr(&n.lp_addr));
    n.mw.behaviour_mut()
        .send_request(mw_peer(&lp_id), greet("x"));
    let started = tokio::time::Instant::now();
    let (mut mw_failed, mut lp_omitted) = (false, false);
    while !(mw_failed && lp_omitted) {
        match n.next().await {
            Ev::Lp(lp_rr::Event::Message {
                message: lp_rr::Message::Request { channel, .. },
                ..
            }) => drop(channel),
            Ev::Lp(lp_rr::Event::InboundFailure { error, .. }) => {
                assert!(
                    matches!(error, lp_rr::InboundFailure::ResponseOmission),
                    "{error}"
                );
                lp_omitted = true;
            }
            Ev::Mw(mw_rr::Event::OutboundFailure { error, .. }) => {
                assert!(
                    matches!(error, mw_rr::OutboundFailure::Malformed(_)),
                    "{error}"
                );
                mw_failed = true;
            }
            Ev::Mw(other) => panic!("meshwire: {other:?}"),
            Ev::Lp(other) => panic!("libp2p: {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // meshwire drops the channel: it resets the stream, rust-libp2p's read fails.
    let mw_id = n.mw_id();
    n.lp.behaviour_mut()
        .send_request(&lp_peer(&mw_id), greet("y"));
    let (mut lp_failed, mut mw_omitted) = (false, false);
    while !(lp_failed && mw_omitted) {
        match n.next().await {
            Ev::Mw(mw_rr::Event::Message {
                message: mw_rr::Message::Request { channel, .. },
                ..
            }) => drop(channel),
            Ev::Mw(mw_rr::Event::InboundFailure { error, .. }) => {
                assert!(
                    matches!(error, mw_rr::InboundFailure::ResponseOmission),
                    "{error}"
                );
                mw_omitted = true;
            }
            Ev::Lp(lp_rr::Event::OutboundFailure { error, .. }) => {
                assert!(matches!(error, lp_rr::OutboundFailure::Io(_)), "{error}");
                lp_failed = true;
            }
            Ev::Mw(other) => panic!("meshwire: {other:?}"),
            Ev::Lp(other) => panic!("libp2p: {other:?}"),
        }
    }

    // Protocols the other side does not serve, both ways.
    let other = "/interop/other/1.0.0";
    let mw_other = mw_rr::json::Behaviour::<Greet, Reply>::new(
        [(StreamProtocol::new(other), mw_rr::ProtocolSupport::Full)],
        mw_rr::Config::default(),
    );
    let mut n = Nodes::new(mw_other, lp_json()).await;
    let (mw_id, lp_id) = (n.mw_id(), n.lp_id());
    n.mw.add_peer_address(mw_peer(&lp_id), mw_addr(&n.lp_addr));
    n.mw.behaviour_mut()
        .send_request(mw_peer(&lp_id), greet("z"));
    match n.next().await {
        Ev::Mw(mw_rr::Event::OutboundFailure { error, .. }) => {
            assert!(
                matches!(error, mw_rr::OutboundFailure::UnsupportedProtocols),
                "{error}"
            )
        }
        Ev::Mw(other) => panic!("meshwire: {other:?}"),
        Ev::Lp(other) => panic!("libp2p: {other:?}"),
    }
    n.lp.behaviour_mut()
        .send_request(&lp_peer(&mw_id), greet("z"));
    match n.next().await {
        Ev::Lp(lp_rr::Event::OutboundFailure { error, .. }) => {
            assert!(
                matches!(error, lp_rr::OutboundFailure::UnsupportedProtocols),
                "{error}"
            )
        }
        Ev::Mw(other) => panic!("meshwire: {other:?}"),
        Ev::Lp(other) => panic!("libp2p: {other:?}"),
    }
}
