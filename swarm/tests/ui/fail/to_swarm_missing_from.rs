use std::task::{Context, Poll};

use meshwire_swarm::{DummyBehaviour, NetworkBehaviour, StreamProtocol, ToSwarm};

struct Pinger;

struct PingEvent;

impl NetworkBehaviour for Pinger {
    type Event = PingEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<PingEvent>> {
        Poll::Pending
    }
}

enum MyEvent {}

impl From<std::convert::Infallible> for MyEvent {
    fn from(i: std::convert::Infallible) -> Self {
        match i {}
    }
}

// `MyEvent` converts from `dummy`'s event but not from `ping`'s.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "MyEvent")]
struct Behaviour {
    dummy: DummyBehaviour,
    ping: Pinger,
}

fn main() {}
