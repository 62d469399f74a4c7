//! `#[behaviour(to_swarm = "...")]`: the user's event type, filled through `From`.
#![deny(warnings, missing_docs)]

use std::task::{Context, Poll};

use meshwire_swarm::{DummyBehaviour, NetworkBehaviour, StreamProtocol, ToSwarm};

/// Reports a string once.
pub struct Hello(Option<&'static str>);

impl NetworkBehaviour for Hello {
    type Event = &'static str;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![StreamProtocol::new("/hello/1")]
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<&'static str>> {
        match self.0.take() {
            Some(s) => Poll::Ready(ToSwarm::GenerateEvent(s)),
            None => Poll::Pending,
        }
    }
}

/// The application's events.
#[derive(Debug, PartialEq)]
pub enum AppEvent {
    /// A greeting.
    Hello(&'static str),
}

impl From<&'static str> for AppEvent {
    fn from(s: &'static str) -> Self {
        AppEvent::Hello(s)
    }
}

impl From<std::convert::Infallible> for AppEvent {
    fn from(i: std::convert::Infallible) -> Self {
        match i {}
    }
}

/// The composed behaviour; with a path as the event type.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "crate::AppEvent")]
pub struct Behaviour {
    hello: Hello,
    dummy: DummyBehaviour,
}

fn main() {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut b = Behaviour {
        hello: Hello(Some("hi")),
        dummy: DummyBehaviour,
    };
    match b.poll(&mut cx) {
        Poll::Ready(ToSwarm::GenerateEvent(e)) => assert_eq!(e, AppEvent::Hello("hi")),
        other => panic!("{other:?}"),
    }
    assert!(b.poll(&mut cx).is_pending());
}
