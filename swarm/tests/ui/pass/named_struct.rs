//! The basic case: named fields, the generated event enum with the struct's visibility,
//! documented (so `missing_docs` passes) and warning-free.
#![deny(warnings, missing_docs)]

use std::task::{Context, Poll};

use meshwire_swarm::{DummyBehaviour, NetworkBehaviour, StreamProtocol, ToSwarm};

/// A behaviour with one protocol that reports numbers.
pub struct Counter(u32);

impl NetworkBehaviour for Counter {
    type Event = u32;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![StreamProtocol::new("/counter/1")]
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<u32>> {
        self.0 += 1;
        Poll::Ready(ToSwarm::GenerateEvent(self.0))
    }
}

/// Two behaviours.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    dummy: DummyBehaviour,
    my_counter: Counter,
}

/// No behaviours at all.
#[derive(NetworkBehaviour)]
pub struct Empty {}

/// Raw identifiers as field names.
#[derive(NetworkBehaviour)]
pub struct Raw {
    r#type: DummyBehaviour,
}

fn main() {
    let mut b = Behaviour {
        dummy: DummyBehaviour,
        my_counter: Counter(0),
    };
    assert_eq!(b.protocols(), [StreamProtocol::new("/counter/1")]);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match b.poll(&mut cx) {
        Poll::Ready(ToSwarm::GenerateEvent(BehaviourEvent::MyCounter(1))) => {}
        other => panic!("{other:?}"),
    }
    // `DummyBehaviour`'s event is `Infallible`: the variant exists but cannot be built.
    let _: fn(std::convert::Infallible) -> BehaviourEvent = BehaviourEvent::Dummy;

    let mut e = Empty {};
    assert!(e.protocols().is_empty());
    assert!(e.poll(&mut cx).is_pending());
    let _: Option<EmptyEvent> = None;

    let r = Raw {
        r#type: DummyBehaviour,
    };
    assert!(r.protocols().is_empty());
    let _: fn(std::convert::Infallible) -> RawEvent = RawEvent::Type;
}
