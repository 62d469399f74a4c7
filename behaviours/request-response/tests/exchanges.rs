//! Request-response between real swarms on the in-memory transport: both directions, user
//! data, timeouts, response omission, unsupported protocols, disconnects, concurrency limits,
//! several protocols, size limits and malformed messages.

mod common;

use std::io;
use std::time::Duration;

use common::{Pair, Side};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use meshwire_request_response::{
    bytes, json, read_to_end_bounded, Codec, CodecError, Config, Event, InboundFailure, Message,
    OutboundFailure, ProtocolSupport, QueueFull,
};
use meshwire_swarm::{DummyBehaviour, StreamProtocol};

const GREET: StreamProtocol = StreamProtocol::new("/test/greet/1");

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Greet {
    name: String,
    times: u32,
}

type Greeter<U = ()> = json::Behaviour<Greet, String, U>;

fn greeter<U>(config: Config) -> Greeter<U> {
    Greeter::new([(GREET, ProtocolSupport::Full)], config)
}

fn ada() -> Greet {
    Greet {
        name: "ada".into(),
        times: 2,
    }
}

#[tokio::test]
async fn requests_and_responses_flow_both_ways() {
    let mut p = Pair::new(
        greeter::<()>(Config::default()),
        greeter::<()>(Config::default()),
    )
    .await;
    let (a_peer, b_peer) = (p.a_peer(), p.b_peer());

    // a asks b.
    let id = p.a.behaviour_mut().send_request(b_peer, ada());
    let (mut answered, mut sent) = (None, false);
    while answered.is_none() || !sent {
        match p.next().await {
            Side::B(Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                assert_eq!((peer, &request), (a_peer, &ada()));
                let reply = request.name.repeat(request.times as usize);
                p.b.behaviour_mut().send_response(channel, reply).unwrap();
            }
            Side::B(Event::ResponseSent { peer, .. }) => {
                assert_eq!(peer, a_peer);
                sent = true;
            }
            Side::A(Event::Message {
                peer,
                connection,
                message:
                    Message::Response {
                        request_id,
                        response,
                        ..
                    },
            }) => {
                assert_eq!((peer, request_id), (b_peer, id));
                assert!(p.a.connection(connection).is_some(), "the connection used");
                answered = Some(response);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered.as_deref(), Some("adaada"));
    assert_eq!(p.a.behaviour().outbound_in_flight(), 0);

    // b asks a, on the same connection.
    let id = p.b.behaviour_mut().send_request(
        a_peer,
        Greet {
            name: "bob".into(),
            times: 1,
        },
    );
    loop {
        match p.next().await {
            Side::A(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                p.a.behaviour_mut()
                    .send_response(channel, format!("hi {}", request.name))
                    .unwrap();
            }
            Side::B(Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                        ..
                    },
                ..
            }) => {
                assert_eq!((request_id, response.as_str()), (id, "hi bob"));
                break;
            }
            Side::A(Event::ResponseSent { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(p.a.connections().count(), 1, "one connection carried both");
}

#[tokio::test]
async fn a_responder_answers_without_a_request_event() {
    let answering = greeter::<()>(Config::default())
        .with_responder(|peer, req: Greet| format!("{} from {peer}", req.name));
    let mut p = Pair::new(greeter::<()>(Config::default()), answering).await;
    let (a_peer, b_peer) = (p.a_peer(), p.b_peer());
    let id = p.a.behaviour_mut().send_request(b_peer, ada());
    let (mut answered, mut sent) = (None, false);
    while answered.is_none() || !sent {
        match p.next().await {
            Side::B(Event::ResponseSent { peer, .. }) => {
                assert_eq!(peer, a_peer);
                sent = true;
            }
            Side::A(Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                        ..
                    },
                ..
            }) => {
                assert_eq!(request_id, id);
                answered = Some(response);
            }
            // In particular no request event on b: the responder answered it.
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered, Some(format!("ada from {a_peer}")));
    assert_eq!(p.b.behaviour().inbound_in_flight(), 0);
}

#[tokio::test]
async fn user_data_comes_back_with_the_response_and_with_failures() {
    let mut p = Pair::new(
        greeter::<&'static str>(Config::default()),
        greeter::<()>(Config::default()),
    )
    .await;
    let b_peer = p.b_peer();
    let first =
        p.a.behaviour_mut()
            .send_request_with(b_peer, ada(), "first");
    let second =
        p.a.behaviour_mut()
            .send_request_with(b_peer, ada(), "second");
    // A peer nobody knows an address of: the dial fails, the user data comes back.
    let nowhere = meshwire_core::Keypair::generate().peer_id();
    let lost =
        p.a.behaviour_mut()
            .send_request_with(nowhere, ada(), "lost");
    let mut got = Vec::new();
    while got.len() < 3 {
        match p.next().await {
            Side::B(Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) => {
                p.b.behaviour_mut()
                    .send_response(channel, "ok".into())
                    .unwrap()
            }
            Side::A(Event::Message {
                message:
                    Message::Response {
                        request_id,
                        user_data,
                        ..
                    },
                ..
            }) => got.push((request_id, user_data, "response")),
            Side::A(Event::OutboundFailure {
                request_id,
                user_data,
                error,
                peer,
                connection,
            }) => {
                assert_eq!((peer, connection), (nowhere, None));
                assert!(matches!(error, OutboundFailure::DialFailure(_)), "{error}");
                got.push((request_id, user_data, "failure"));
            }
            _ => {}
        }
    }
    got.sort();
    let mut want = vec![
        (first, "first", "response"),
        (second, "second", "response"),
        (lost, "lost", "failure"),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_held_channel_times_out_on_both_sides() {
    let timeout = Duration::from_millis(300);
    let config = Config::default().with_request_timeout(timeout);
    let mut p = Pair::new(greeter::<()>(config.clone()), greeter::<()>(config)).await;
    let b_peer = p.b_peer();
    let id = p.a.behaviour_mut().send_request(b_peer, ada());
    let mut held = None;
    let (mut a_failed, mut b_failed) = (false, false);
    while !(a_failed && b_failed) {
        match p.next().await {
            Side::B(Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) => held = Some(channel),
            Side::A(Event::OutboundFailure {
                request_id, error, ..
            }) => {
                assert_eq!(request_id, id);
                assert!(
                    matches!(error, OutboundFailure::Timeout(d) if d == timeout),
                    "{error}"
                );
                a_failed = true;
            }
            Side::B(Event::InboundFailure { error, .. }) => {
                assert!(
                    matches!(error, InboundFailure::Timeout(d) if d == timeout),
                    "{error}"
                );
                b_failed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Too late: the response comes back to the application.
    let channel = held.expect("the request arrived");
    assert!(!channel.is_open());
    let late = p.b.behaviour_mut().send_response(channel, "late".into());
    assert_eq!(late, Err("late".to_string()));
}

#[tokio::test]
async fn a_dropped_channel_is_an_omission_and_the_requester_fails_at_once() {
    let config = Config::default().with_request_timeout(Duration::from_secs(10));
    let mut p = Pair::new(greeter::<()>(config.clone()), greeter::<()>(config)).await;
    let started = tokio::time::Instant::now();
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request(b_peer, ada());
    let (mut a_failed, mut b_failed) = (false, false);
    while !(a_failed && b_failed) {
        match p.next().await {
            Side::B(Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) => drop(channel),
            Side::B(Event::InboundFailure { error, .. }) => {
                assert!(matches!(error, InboundFailure::ResponseOmission), "{error}");
                b_failed = true;
            }
            Side::A(Event::OutboundFailure { error, .. }) => {
                // The stream was reset: an I/O error, not an empty (malformed) response.
                assert!(matches!(error, OutboundFailure::Io(_)), "{error}");
                a_failed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "not by timeout");
}

#[tokio::test]
async fn a_peer_without_the_protocol_is_unsupported() {
    // b speaks nothing.
    let mut p = Pair::new(greeter::<()>(Config::default()), DummyBehaviour).await;
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request(b_peer, ada());
    match p.next().await {
        Side::A(Event::OutboundFailure { error, .. }) => {
            assert!(
                matches!(error, OutboundFailure::UnsupportedProtocols),
                "{error}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }

    // b has the protocol for its own requests only: it does not accept ours.
    let b = Greeter::<()>::new([(GREET, ProtocolSupport::Outbound)], Config::default());
    let mut p = Pair::new(greeter::<()>(Config::default()), b).await;
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request(b_peer, ada());
    match p.next().await {
        Side::A(Event::OutboundFailure { error, .. }) => {
            assert!(
                matches!(error, OutboundFailure::UnsupportedProtocols),
                "{error}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }

    // a has it for inbound requests only: it sends nothing.
    let a = Greeter::<()>::new([(GREET, ProtocolSupport::Inbound)], Config::default());
    let mut p = Pair::new(a, greeter::<()>(Config::default())).await;
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request(b_peer, ada());
    match p.next().await {
        Side::A(Event::OutboundFailure {
            error, connection, ..
        }) => {
            assert!(
                matches!(error, OutboundFailure::UnsupportedProtocols),
                "{error}"
            );
            assert_eq!(connection, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(p.a.connections().count(), 0, "nothing was dialed");
}

#[tokio::test]
async fn a_disconnect_mid_request_fails_both_sides_as_connection_closed() {
    let mut p = Pair::new(
        greeter::<()>(Config::default()),
        greeter::<()>(Config::default()),
    )
    .await;
    let a_peer = p.a_peer();
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request(b_peer, ada());
    let held = loop {
        if let Side::B(Event::Message {
            message: Message::Request { channel, .. },
            ..
        }) = p.next().await
        {
            break channel;
        }
    };
    // The responder hangs up while the request waits for its answer.
    assert!(p.b.disconnect_peer_id(a_peer));
    let (mut a_failed, mut b_failed) = (false, false);
    while !(a_failed && b_failed) {
        match p.next().await {
            Side::A(Event::OutboundFailure { error, .. }) => {
                assert!(
                    matches!(error, OutboundFailure::ConnectionClosed),
                    "{error}"
                );
                a_failed = true;
            }
            Side::B(Event::InboundFailure { error, .. }) => {
                assert!(matches!(error, InboundFailure::ConnectionClosed), "{error}");
                b_failed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!held.is_open());
    assert_eq!(p.b.behaviour().inbound_in_flight(), 0);
}

/// `b` holds every request; `a` sends 5. `b` admits `admitted` of them and resets the
/// others; answering the admitted ones completes them.
async fn inbound_limit_case(b_config: Config, admitted: usize) {
    let mut p = Pair::new(greeter::<usize>(Config::default()), greeter::<()>(b_config)).await;
    let b_peer = p.b_peer();
    for i in 0..5 {
        p.a.behaviour_mut().send_request_with(b_peer, ada(), i);
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    while held.len() < admitted || refused < 5 - admitted {
        match p.next().await {
            Side::B(Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) => held.push(channel),
            Side::A(Event::OutboundFailure { error, .. }) => {
                assert!(matches!(error, OutboundFailure::Io(_)), "{error}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(p.b.behaviour().inbound_in_flight() <= admitted);
    }
    // Nothing more arrives while the slots are taken.
    assert!(p.run_for(Duration::from_millis(200)).await.is_empty());
    for channel in held {
        p.b.behaviour_mut()
            .send_response(channel, "ok".into())
            .unwrap();
    }
    let mut answered = 0;
    while answered < admitted {
        match p.next().await {
            Side::A(Event::Message {
                message: Message::Response { .. },
                ..
            }) => answered += 1,
            Side::B(Event::ResponseSent { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(p.a.behaviour().outbound_in_flight(), 0);
}

#[tokio::test]
async fn inbound_streams_past_the_per_peer_limit_are_reset() {
    let config = Config::default().with_max_inbound_streams_per_peer(2);
    inbound_limit_case(config, 2).await;
}

#[tokio::test]
async fn inbound_streams_past_the_total_limit_are_reset() {
    let config = Config::default().with_max_inbound_streams(3);
    inbound_limit_case(config, 3).await;
}

#[tokio::test]
async fn requests_past_the_outbound_limit_fail_as_queue_full_at_once() {
    let config = Config::default().with_max_outbound_in_flight(2);
    let mut p = Pair::new(greeter::<u8>(config), greeter::<()>(Config::default())).await;
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request_with(b_peer, ada(), 1);
    p.a.behaviour_mut().send_request_with(b_peer, ada(), 2);
    assert_eq!(p.a.behaviour().outbound_in_flight(), 2);
    let third = p.a.behaviour_mut().send_request_with(b_peer, ada(), 3);
    // The refusal is the first event, before any request is answered.
    match p.next().await {
        Side::A(Event::OutboundFailure {
            request_id,
            error,
            user_data,
            ..
        }) => {
            assert_eq!((request_id, user_data), (third, 3));
            assert!(
                matches!(error, OutboundFailure::QueueFull { limit: 2 }),
                "{error}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut answered = Vec::new();
    while answered.len() < 2 {
        match p.next().await {
            Side::B(Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) => {
                p.b.behaviour_mut()
                    .send_response(channel, "ok".into())
                    .unwrap()
            }
            Side::A(Event::Message {
                message: Message::Response { user_data, .. },
                ..
            }) => answered.push(user_data),
            Side::B(Event::ResponseSent { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    answered.sort();
    assert_eq!(answered, [1, 2]);
    // Room again.
    p.a.behaviour_mut().send_request_with(b_peer, ada(), 4);
    p.a.behaviour_mut()
        .try_send_request_with(b_peer, ada(), 5)
        .unwrap();
    assert_eq!(p.a.behaviour().outbound_in_flight(), 2);
    // The refusal where the request is sent, with no event later.
    let refused = p.a.behaviour_mut().try_send_request_with(b_peer, ada(), 6);
    assert_eq!(refused, Err(QueueFull { limit: 2 }));
    assert_eq!(p.a.behaviour().outbound_in_flight(), 2);
}

/// A protocol in a few lines: a request is a line of text, the response is the responder's
/// text prefixed with the protocol the exchange was negotiated with.
#[derive(Clone, Default)]
struct Tagged;

impl Codec for Tagged {
    type Protocol = StreamProtocol;
    type Request = String;
    type Response = String;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<String>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_to_end_bounded(io, 1024).await?;
        String::from_utf8(bytes).map_err(|e| CodecError::Malformed(e.to_string()).into())
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<String>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_request(p, io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: String,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(r.as_bytes()).await
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        r: String,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(format!("{p} {r}").as_bytes()).await
    }
}

const V1: StreamProtocol = StreamProtocol::new("/test/tagged/1");
const V2: StreamProtocol = StreamProtocol::new("/test/tagged/2");

/// What `a` (proposing `a_protocols`) gets back from `b` (serving `b_protocols`).
async fn tagged_exchange(
    a_protocols: Vec<(StreamProtocol, ProtocolSupport)>,
    b_protocols: Vec<(StreamProtocol, ProtocolSupport)>,
) -> Result<String, OutboundFailure> {
    let a = meshwire_request_response::Behaviour::<Tagged>::new(a_protocols, Config::default());
    let b = meshwire_request_response::Behaviour::<Tagged>::new(b_protocols, Config::default());
    let mut p = Pair::new(a, b).await;
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request(b_peer, "ping".into());
    loop {
        match p.next().await {
            Side::B(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                assert_eq!(request, "ping");
                p.b.behaviour_mut()
                    .send_response(channel, "pong".into())
                    .unwrap();
            }
            Side::A(Event::Message {
                message: Message::Response { response, .. },
                ..
            }) => return Ok(response),
            Side::A(Event::OutboundFailure { error, .. }) => return Err(error),
            _ => {}
        }
    }
}

#[tokio::test]
async fn several_protocols_negotiate_the_first_both_sides_serve() {
    use ProtocolSupport::{Full, Inbound, Outbound};
    // Both serve both: a's first choice.
    let got = tagged_exchange(vec![(V2, Full), (V1, Full)], vec![(V1, Full), (V2, Full)]).await;
    assert_eq!(got.unwrap(), "/test/tagged/2 pong");
    // b serves only the older version.
    let got = tagged_exchange(vec![(V2, Full), (V1, Full)], vec![(V1, Full)]).await;
    assert_eq!(got.unwrap(), "/test/tagged/1 pong");
    // a only accepts V2 from others, so it proposes V1 alone.
    let got = tagged_exchange(
        vec![(V2, Inbound), (V1, Outbound)],
        vec![(V1, Full), (V2, Full)],
    )
    .await;
    assert_eq!(got.unwrap(), "/test/tagged/1 pong");
    // No common protocol.
    let got = tagged_exchange(vec![(V2, Full)], vec![(V1, Full)]).await;
    assert!(
        matches!(got, Err(OutboundFailure::UnsupportedProtocols)),
        "{got:?}"
    );
    // b has V2 for its own requests only.
    let got = tagged_exchange(vec![(V2, Full)], vec![(V1, Full), (V2, Outbound)]).await;
    assert!(
        matches!(got, Err(OutboundFailure::UnsupportedProtocols)),
        "{got:?}"
    );
}

#[tokio::test]
async fn size_limits_are_typed_on_both_sides() {
    const BLOB: StreamProtocol = StreamProtocol::new("/test/blob/1");
    let behaviour = |request_max: u64, response_max: u64| {
        bytes::Behaviour::<()>::with_codec(
            bytes::Codec::new(request_max, response_max),
            [(BLOB, ProtocolSupport::Full)],
            Config::default(),
        )
    };
    // a sends up to 100 bytes and reads responses up to 10; b reads requests up to 50.
    let mut p = Pair::new(behaviour(100, 10), behaviour(50, 1000)).await;
    let b_peer = p.b_peer();

    // Over a's own request limit: refused before a byte is written.
    p.a.behaviour_mut().send_request(b_peer, vec![0; 101]);
    match p.next().await {
        Side::A(Event::OutboundFailure { error, .. }) => {
            assert!(
                matches!(error, OutboundFailure::TooLarge { limit: 100 }),
                "{error}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }

    // Within a's limit, over b's: b refuses it typed, a sees the reset.
    p.a.behaviour_mut().send_request(b_peer, vec![0; 60]);
    let (mut a_failed, mut b_failed) = (false, false);
    while !(a_failed && b_failed) {
        match p.next().await {
            Side::B(Event::InboundFailure { error, .. }) => {
                assert!(
                    matches!(error, InboundFailure::TooLarge { limit: 50 }),
                    "{error}"
                );
                b_failed = true;
            }
            Side::A(Event::OutboundFailure { error, .. }) => {
                assert!(matches!(error, OutboundFailure::Io(_)), "{error}");
                a_failed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // A response over a's response limit.
    p.a.behaviour_mut().send_request(b_peer, vec![1; 50]);
    loop {
        match p.next().await {
            Side::B(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                assert_eq!(request, vec![1; 50]);
                p.b.behaviour_mut()
                    .send_response(channel, vec![2; 11])
                    .unwrap();
            }
            Side::B(Event::ResponseSent { .. }) => {}
            Side::A(Event::OutboundFailure { error, .. }) => {
                assert!(
                    matches!(error, OutboundFailure::TooLarge { limit: 10 }),
                    "{error}"
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn malformed_requests_and_responses_are_typed() {
    // a writes raw bytes on b's JSON protocol.
    let raw = bytes::Behaviour::<()>::new([(GREET, ProtocolSupport::Full)], Config::default());
    let mut p = Pair::new(raw, greeter::<()>(Config::default())).await;
    let b_peer = p.b_peer();
    p.a.behaviour_mut()
        .send_request(b_peer, b"{not json".to_vec());
    let (mut a_failed, mut b_failed) = (false, false);
    while !(a_failed && b_failed) {
        match p.next().await {
            Side::B(Event::InboundFailure { error, .. }) => {
                assert!(matches!(error, InboundFailure::Malformed(_)), "{error}");
                b_failed = true;
            }
            Side::A(Event::OutboundFailure { error, .. }) => {
                assert!(matches!(error, OutboundFailure::Io(_)), "{error}");
                a_failed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // b (raw bytes) answers a JSON requester with bytes that do not parse.
    let raw = bytes::Behaviour::<()>::new([(GREET, ProtocolSupport::Full)], Config::default());
    let mut p = Pair::new(greeter::<()>(Config::default()), raw).await;
    let b_peer = p.b_peer();
    p.a.behaviour_mut().send_request(b_peer, ada());
    loop {
        match p.next().await {
            Side::B(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                assert_eq!(request, br#"{"name":"ada","times":2}"#);
                p.b.behaviour_mut()
                    .send_response(channel, b"\xff".to_vec())
                    .unwrap();
            }
            Side::B(Event::ResponseSent { .. }) => {}
            Side::A(Event::OutboundFailure { error, .. }) => {
                assert!(matches!(error, OutboundFailure::Malformed(_)), "{error}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_cancelled_exchange_resets_its_stream_and_reports_cancelled() {
    let config = Config::default().with_request_timeout(Duration::from_secs(10));
    let mut p = Pair::new(greeter::<u8>(config.clone()), greeter::<u8>(config)).await;
    let started = tokio::time::Instant::now();
    let b_peer = p.b_peer();
    let id = p.a.behaviour_mut().send_request_with(b_peer, ada(), 7);
    // B holds the request; A cancels it.
    let channel = match p.next().await {
        Side::B(Event::Message {
            message: Message::Request { channel, .. },
            ..
        }) => channel,
        other => panic!("unexpected {other:?}"),
    };
    assert!(p.a.behaviour_mut().cancel_request(id));
    assert!(!p.a.behaviour_mut().cancel_request(id), "cancelled once");
    match p.next().await {
        Side::A(Event::OutboundFailure {
            request_id,
            error: OutboundFailure::Cancelled,
            user_data: 7,
            ..
        }) => assert_eq!(request_id, id),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(p.a.behaviour().outbound_in_flight(), 0);
    // The remote sees the reset: its response cannot be written.
    let _ = p.b.behaviour_mut().send_response(channel, "late".into());
    match p.next().await {
        Side::B(Event::InboundFailure { error, .. }) => {
            assert!(matches!(error, InboundFailure::Io(_)), "{error}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "not by timeout");
}

#[tokio::test]
async fn a_request_cancelled_before_its_stream_is_never_sent() {
    let mut p = Pair::new(
        greeter::<u8>(Config::default()),
        greeter::<u8>(Config::default()),
    )
    .await;
    let b_peer = p.b_peer();
    let id = p.a.behaviour_mut().send_request_with(b_peer, ada(), 3);
    assert!(p.a.behaviour_mut().cancel_request(id));
    match p.next().await {
        Side::A(Event::OutboundFailure {
            request_id,
            error: OutboundFailure::Cancelled,
            user_data: 3,
            ..
        }) => assert_eq!(request_id, id),
        other => panic!("unexpected {other:?}"),
    }
    // The stream, opened meanwhile, is reset: B reads no request.
    for ev in p.run_for(Duration::from_millis(300)).await {
        assert!(
            !matches!(ev, Side::B(Event::Message { .. }) | Side::A(_)),
            "unexpected {ev:?}"
        );
    }
    assert!(!p.a.behaviour_mut().cancel_request(id), "already ended");
    // The behaviour still works.
    let next = p.a.behaviour_mut().send_request_with(b_peer, ada(), 4);
    assert_ne!(next, id);
}
