//! `#[derive(NetworkBehaviour)]` dispatch, without a network: two scripted behaviours are
//! composed (flat, with `to_swarm`, generic, and nested) and the composite is driven by hand.
//!
//! Covered routing paths: `protocols()` union; the four connection hooks (order, first
//! denial wins, extra dial addresses concatenated); `connection_keep_alive`; `on_swarm_event`
//! fan-out; `poll` order and event conversion; `OpenStream` route indices pushed on the way up
//! and popped on the way down through `on_outbound_stream` (including nested compositions and
//! unknown or empty routes). `on_inbound_stream` needs a real `Stream` and is left to the
//! swarm's network tests.

#![deny(warnings, missing_docs)]
// The derive is behind the default feature `macros`.
#![cfg(feature = "macros")]

use std::collections::VecDeque;
use std::fmt;
use std::task::{Context, Poll};

use futures::task::noop_waker;
use meshwire_swarm::{
    ConnectionDenied, ConnectionId, DialOpts, FromSwarm, InboundStream, Multiaddr,
    NetworkBehaviour, OpenStream, OutboundStreamResult, PeerId, StreamError, StreamProtocol,
    ToSwarm,
};

/// The event of the first kind of child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlphaEvent(u32);

/// The event of the second kind of child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetaEvent(&'static str);

/// A call a [`Scripted`] behaviour received.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    PendingInbound,
    EstablishedInbound,
    PendingOutbound,
    EstablishedOutbound,
    SwarmEvent(&'static str),
    InboundStream,
    OutboundStream(meshwire_swarm::StreamRequestId, String),
}

/// Which hook a [`Scripted`] behaviour refuses connections in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    PendingInbound,
    EstablishedInbound,
    PendingOutbound,
    EstablishedOutbound,
}

/// Why a [`Scripted`] behaviour refused a connection: its name.
#[derive(Debug)]
struct Refusal(&'static str);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by {}", self.0)
    }
}

impl std::error::Error for Refusal {}

/// A behaviour that records the calls it gets and returns scripted commands from `poll`.
pub struct Scripted<E> {
    name: &'static str,
    protocols: Vec<StreamProtocol>,
    calls: Vec<Call>,
    script: VecDeque<ToSwarm<E>>,
    deny: Option<Hook>,
    keep_alive: bool,
    extra_addr: Option<Multiaddr>,
}

impl<E> Scripted<E> {
    fn new(name: &'static str, protocols: &[&'static str]) -> Self {
        Scripted {
            name,
            protocols: protocols.iter().map(|p| StreamProtocol::new(p)).collect(),
            calls: Vec::new(),
            script: VecDeque::new(),
            deny: None,
            keep_alive: false,
            extra_addr: None,
        }
    }

    fn check(&mut self, hook: Hook, call: Call) -> Result<(), ConnectionDenied> {
        self.calls.push(call);
        if self.deny == Some(hook) {
            return Err(ConnectionDenied::new(Refusal(self.name)));
        }
        Ok(())
    }

    fn take_calls(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.calls)
    }
}

impl<E: Send + 'static> NetworkBehaviour for Scripted<E> {
    type Event = E;

    fn protocols(&self) -> Vec<StreamProtocol> {
        self.protocols.clone()
    }

    fn handle_pending_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(Hook::PendingInbound, Call::PendingInbound)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(Hook::EstablishedInbound, Call::EstablishedInbound)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: Option<PeerId>,
        _addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.check(Hook::PendingOutbound, Call::PendingOutbound)?;
        Ok(self.extra_addr.iter().cloned().collect())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(Hook::EstablishedOutbound, Call::EstablishedOutbound)
    }

    fn connection_keep_alive(&self, _peer: PeerId, _connection: ConnectionId) -> bool {
        self.keep_alive
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let kind = match event {
            FromSwarm::NewExternalAddrCandidate { .. } => "candidate",
            _ => "other",
        };
        self.calls.push(Call::SwarmEvent(kind));
    }

    fn on_inbound_stream(&mut self, _stream: InboundStream) {
        self.calls.push(Call::InboundStream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let outcome = match &result.result {
            Ok(s) => format!("ok {}", s.protocol),
            Err(e) => format!("err {e}"),
        };
        self.calls.push(Call::OutboundStream(result.id, outcome));
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<E>> {
        match self.script.pop_front() {
            Some(command) => Poll::Ready(command),
            None => Poll::Pending,
        }
    }
}

/// Two children, the generated event enum.
#[derive(NetworkBehaviour)]
pub struct Pair {
    alpha: Scripted<AlphaEvent>,
    beta: Scripted<BetaEvent>,
}

fn pair() -> Pair {
    Pair {
        alpha: Scripted::new("alpha", &["/alpha/1", "/shared/1"]),
        beta: Scripted::new("beta", &["/beta/1", "/shared/1", "/alpha/1"]),
    }
}

/// The application's own event type for [`Nested`].
#[derive(Debug, PartialEq, Eq)]
pub enum AppEvent {
    /// From the first field.
    Alpha(AlphaEvent),
    /// From the nested composition.
    Pair(String),
}

impl From<AlphaEvent> for AppEvent {
    fn from(e: AlphaEvent) -> Self {
        AppEvent::Alpha(e)
    }
}

impl From<PairEvent> for AppEvent {
    fn from(e: PairEvent) -> Self {
        AppEvent::Pair(format!("{e:?}"))
    }
}

/// A composition holding a composition, with a user event type.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "AppEvent")]
pub struct Nested {
    first: Scripted<AlphaEvent>,
    inner: Pair,
}

fn nested() -> Nested {
    Nested {
        first: Scripted::new("first", &["/first/1"]),
        inner: pair(),
    }
}

/// A generic composition.
#[derive(NetworkBehaviour)]
pub struct Generic<A, B>
where
    A: Send,
{
    a: A,
    b: B,
}

fn poll_once<B: NetworkBehaviour>(b: &mut B) -> Poll<ToSwarm<B::Event>> {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    b.poll(&mut cx)
}

fn names(protocols: &[StreamProtocol]) -> Vec<String> {
    protocols.iter().map(|p| p.as_str().to_owned()).collect()
}

fn addr(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap()
}

/// The `OpenStream` of a command, which must be one.
fn expect_open<E: fmt::Debug>(poll: Poll<ToSwarm<E>>) -> OpenStream {
    match poll {
        Poll::Ready(ToSwarm::OpenStream(open)) => open,
        other => panic!("expected OpenStream, got {other:?}"),
    }
}

/// A failed result for `open`, as the swarm would send it.
fn failed(open: OpenStream) -> OutboundStreamResult {
    OutboundStreamResult {
        id: open.id,
        peer: open.peer,
        result: Err(StreamError::NotConnected),
        route: open.route,
    }
}

fn not_connected(open_id: meshwire_swarm::StreamRequestId) -> Call {
    Call::OutboundStream(open_id, format!("err {}", StreamError::NotConnected))
}

#[test]
fn protocols_are_the_union_in_field_order() {
    let p = pair();
    assert_eq!(
        names(&p.protocols()),
        ["/alpha/1", "/shared/1", "/beta/1"],
        "duplicates removed, first occurrence kept"
    );
    let n = nested();
    assert_eq!(
        names(&n.protocols()),
        ["/first/1", "/alpha/1", "/shared/1", "/beta/1"]
    );
}

#[test]
fn events_map_to_variants() {
    let mut p = pair();
    p.beta
        .script
        .push_back(ToSwarm::GenerateEvent(BetaEvent("b")));
    p.alpha
        .script
        .push_back(ToSwarm::GenerateEvent(AlphaEvent(1)));
    // Field order: alpha first although beta was scripted first.
    match poll_once(&mut p) {
        Poll::Ready(ToSwarm::GenerateEvent(PairEvent::Alpha(AlphaEvent(1)))) => {}
        other => panic!("{other:?}"),
    }
    match poll_once(&mut p) {
        Poll::Ready(ToSwarm::GenerateEvent(PairEvent::Beta(BetaEvent("b")))) => {}
        other => panic!("{other:?}"),
    }
    assert!(poll_once(&mut p).is_pending());

    // The generated enum's Debug.
    assert_eq!(
        format!("{:?}", PairEvent::Alpha(AlphaEvent(7))),
        "Alpha(AlphaEvent(7))"
    );
    assert_eq!(
        format!("{:?}", PairEvent::Beta(BetaEvent("x"))),
        "Beta(BetaEvent(\"x\"))"
    );
}

#[test]
fn events_convert_into_the_user_type_through_nesting() {
    let mut n = nested();
    n.inner
        .beta
        .script
        .push_back(ToSwarm::GenerateEvent(BetaEvent("deep")));
    n.first
        .script
        .push_back(ToSwarm::GenerateEvent(AlphaEvent(3)));
    match poll_once(&mut n) {
        Poll::Ready(ToSwarm::GenerateEvent(e)) => assert_eq!(e, AppEvent::Alpha(AlphaEvent(3))),
        other => panic!("{other:?}"),
    }
    match poll_once(&mut n) {
        Poll::Ready(ToSwarm::GenerateEvent(e)) => {
            assert_eq!(e, AppEvent::Pair("Beta(BetaEvent(\"deep\"))".into()));
        }
        other => panic!("{other:?}"),
    }
    assert!(poll_once(&mut n).is_pending());
}

#[test]
fn other_commands_pass_through_unchanged() {
    let mut p = pair();
    let peer = PeerId::random();
    p.beta.script.push_back(ToSwarm::Dial(DialOpts::peer(peer)));
    p.beta.script.push_back(ToSwarm::ProtocolsChanged);
    match poll_once(&mut p) {
        Poll::Ready(ToSwarm::Dial(opts)) => assert_eq!(opts.peer_id(), Some(peer)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        poll_once(&mut p),
        Poll::Ready(ToSwarm::ProtocolsChanged)
    ));
}

#[test]
fn outbound_stream_results_return_to_the_requesting_child() {
    let peer = PeerId::random();
    let mut p = pair();
    p.beta.script.push_back(ToSwarm::OpenStream(OpenStream::new(
        peer,
        StreamProtocol::new("/beta/1"),
    )));
    p.alpha
        .script
        .push_back(ToSwarm::OpenStream(OpenStream::new(
            peer,
            StreamProtocol::new("/alpha/1"),
        )));

    let from_alpha = expect_open(poll_once(&mut p));
    let from_beta = expect_open(poll_once(&mut p));
    assert_eq!(from_alpha.protocols[0].as_str(), "/alpha/1");
    assert_eq!(from_beta.protocols[0].as_str(), "/beta/1");
    let (alpha_id, beta_id) = (from_alpha.id, from_beta.id);

    // Back in the opposite order: each reaches its requester and nobody else.
    p.on_outbound_stream(failed(from_beta));
    assert_eq!(p.beta.take_calls(), [not_connected(beta_id)]);
    assert_eq!(p.alpha.take_calls(), []);
    p.on_outbound_stream(failed(from_alpha));
    assert_eq!(p.alpha.take_calls(), [not_connected(alpha_id)]);
    assert_eq!(p.beta.take_calls(), []);
}

#[test]
fn outbound_stream_results_find_their_way_through_nesting() {
    let peer = PeerId::random();
    let mut n = nested();
    // inner.alpha is child 0 of child 1; first is child 0.
    n.inner
        .alpha
        .script
        .push_back(ToSwarm::OpenStream(OpenStream::new(
            peer,
            StreamProtocol::new("/alpha/1"),
        )));
    n.inner
        .beta
        .script
        .push_back(ToSwarm::OpenStream(OpenStream::new(
            peer,
            StreamProtocol::new("/beta/1"),
        )));
    n.first
        .script
        .push_back(ToSwarm::OpenStream(OpenStream::new(
            peer,
            StreamProtocol::new("/first/1"),
        )));

    let from_first = expect_open(poll_once(&mut n));
    let from_inner_alpha = expect_open(poll_once(&mut n));
    let from_inner_beta = expect_open(poll_once(&mut n));
    assert_eq!(from_first.protocols[0].as_str(), "/first/1");
    assert_eq!(from_inner_alpha.protocols[0].as_str(), "/alpha/1");
    assert_eq!(from_inner_beta.protocols[0].as_str(), "/beta/1");

    let ids = (from_first.id, from_inner_alpha.id, from_inner_beta.id);
    n.on_outbound_stream(failed(from_inner_alpha));
    assert_eq!(n.inner.alpha.take_calls(), [not_connected(ids.1)]);
    assert_eq!(n.inner.beta.take_calls(), []);
    assert_eq!(n.first.take_calls(), []);

    n.on_outbound_stream(failed(from_inner_beta));
    assert_eq!(n.inner.beta.take_calls(), [not_connected(ids.2)]);
    assert_eq!(n.inner.alpha.take_calls(), []);
    assert_eq!(n.first.take_calls(), []);

    n.on_outbound_stream(failed(from_first));
    assert_eq!(n.first.take_calls(), [not_connected(ids.0)]);
    assert_eq!(n.inner.alpha.take_calls(), []);
    assert_eq!(n.inner.beta.take_calls(), []);
}

#[test]
fn results_with_unknown_or_empty_routes_are_dropped() {
    let peer = PeerId::random();
    let mut n = nested();

    // Nobody asked: empty route.
    let stray = OpenStream::new(peer, StreamProtocol::new("/first/1"));
    n.on_outbound_stream(failed(stray));

    // Index 2 of a two-field struct.
    let mut unknown = OpenStream::new(peer, StreamProtocol::new("/first/1"));
    unknown.route.push(2);
    n.on_outbound_stream(failed(unknown));

    // Known at the outer level, empty below it.
    let mut half = OpenStream::new(peer, StreamProtocol::new("/alpha/1"));
    half.route.push(1);
    n.on_outbound_stream(failed(half));

    assert_eq!(n.first.take_calls(), []);
    assert_eq!(n.inner.alpha.take_calls(), []);
    assert_eq!(n.inner.beta.take_calls(), []);
}

#[test]
fn the_first_denial_is_returned_and_stops_the_hook() {
    let c = ConnectionId::next();
    let peer = PeerId::random();
    let (local, remote) = (addr(1), addr(2));

    // The second child refuses: the first was asked, the denial is the second's.
    for hook in [
        Hook::PendingInbound,
        Hook::EstablishedInbound,
        Hook::PendingOutbound,
        Hook::EstablishedOutbound,
    ] {
        let mut p = pair();
        p.beta.deny = Some(hook);
        let result = match hook {
            Hook::PendingInbound => p.handle_pending_inbound_connection(c, &local, &remote),
            Hook::EstablishedInbound => {
                p.handle_established_inbound_connection(c, peer, &local, &remote)
            }
            Hook::PendingOutbound => p
                .handle_pending_outbound_connection(c, Some(peer), std::slice::from_ref(&remote))
                .map(|_| ()),
            Hook::EstablishedOutbound => p.handle_established_outbound_connection(c, peer, &remote),
        };
        let denied = result.expect_err("beta refuses");
        assert_eq!(
            denied.downcast_ref::<Refusal>().map(|r| r.0),
            Some("beta"),
            "{hook:?}"
        );
        assert_eq!(
            p.alpha.take_calls().len(),
            1,
            "{hook:?}: alpha was asked first"
        );
        assert_eq!(p.beta.take_calls().len(), 1, "{hook:?}");

        // The first child refuses: the second is not asked.
        let mut p = pair();
        p.alpha.deny = Some(hook);
        p.beta.deny = Some(hook);
        let result = match hook {
            Hook::PendingInbound => p.handle_pending_inbound_connection(c, &local, &remote),
            Hook::EstablishedInbound => {
                p.handle_established_inbound_connection(c, peer, &local, &remote)
            }
            Hook::PendingOutbound => p
                .handle_pending_outbound_connection(c, Some(peer), std::slice::from_ref(&remote))
                .map(|_| ()),
            Hook::EstablishedOutbound => p.handle_established_outbound_connection(c, peer, &remote),
        };
        let denied = result.expect_err("alpha refuses");
        assert_eq!(denied.downcast_ref::<Refusal>().map(|r| r.0), Some("alpha"));
        assert_eq!(p.beta.take_calls(), [], "{hook:?}: beta was not asked");
    }

    // Through nesting: the inner composition's second child refuses.
    let mut n = nested();
    n.inner.beta.deny = Some(Hook::EstablishedInbound);
    let denied = n
        .handle_established_inbound_connection(c, peer, &local, &remote)
        .expect_err("inner beta refuses");
    assert_eq!(denied.downcast_ref::<Refusal>().map(|r| r.0), Some("beta"));
    assert_eq!(n.first.take_calls(), [Call::EstablishedInbound]);
    assert_eq!(n.inner.alpha.take_calls(), [Call::EstablishedInbound]);
}

#[test]
fn hooks_reach_every_child_when_all_accept() {
    let c = ConnectionId::next();
    let peer = PeerId::random();
    let (local, remote) = (addr(1), addr(2));
    let mut n = nested();
    n.first.extra_addr = Some(addr(10));
    n.inner.beta.extra_addr = Some(addr(11));

    n.handle_pending_inbound_connection(c, &local, &remote)
        .unwrap();
    n.handle_established_inbound_connection(c, peer, &local, &remote)
        .unwrap();
    let extra = n
        .handle_pending_outbound_connection(c, Some(peer), std::slice::from_ref(&remote))
        .unwrap();
    assert_eq!(extra, [addr(10), addr(11)], "extra addresses concatenated");
    n.handle_established_outbound_connection(c, peer, &remote)
        .unwrap();
    n.on_swarm_event(FromSwarm::NewExternalAddrCandidate { addr: &local });

    let all = [
        Call::PendingInbound,
        Call::EstablishedInbound,
        Call::PendingOutbound,
        Call::EstablishedOutbound,
        Call::SwarmEvent("candidate"),
    ];
    assert_eq!(n.first.take_calls(), all);
    assert_eq!(n.inner.alpha.take_calls(), all);
    assert_eq!(n.inner.beta.take_calls(), all);
}

#[test]
fn keep_alive_is_true_if_any_child_says_so() {
    let c = ConnectionId::next();
    let peer = PeerId::random();
    let mut n = nested();
    assert!(!n.connection_keep_alive(peer, c));
    n.inner.beta.keep_alive = true;
    assert!(n.connection_keep_alive(peer, c));
    n.inner.beta.keep_alive = false;
    n.first.keep_alive = true;
    assert!(n.connection_keep_alive(peer, c));
    n.first.keep_alive = false;
    assert!(!n.connection_keep_alive(peer, c));
}

#[test]
fn generic_compositions_work() {
    let peer = PeerId::random();
    let mut g: Generic<Scripted<AlphaEvent>, Pair> = Generic {
        a: Scripted::new("a", &["/a/1"]),
        b: pair(),
    };
    assert_eq!(
        names(&g.protocols()),
        ["/a/1", "/alpha/1", "/shared/1", "/beta/1"]
    );
    g.b.beta
        .script
        .push_back(ToSwarm::OpenStream(OpenStream::new(
            peer,
            StreamProtocol::new("/beta/1"),
        )));
    g.b.alpha
        .script
        .push_back(ToSwarm::GenerateEvent(AlphaEvent(5)));
    match poll_once(&mut g) {
        Poll::Ready(ToSwarm::GenerateEvent(GenericEvent::B(PairEvent::Alpha(AlphaEvent(5))))) => {}
        other => panic!("{other:?}"),
    }
    let open = expect_open(poll_once(&mut g));
    let id = open.id;
    g.on_outbound_stream(failed(open));
    assert_eq!(g.b.beta.take_calls(), [not_connected(id)]);
    assert_eq!(g.b.alpha.take_calls(), []);
    assert_eq!(g.a.take_calls(), []);
}
