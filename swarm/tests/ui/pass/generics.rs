//! Generic structs: bounds are added for the fields that use the parameters, the struct's own
//! bounds, where clause and defaults are kept, and the generated enum is generic too.
#![deny(warnings, missing_docs)]

use std::marker::PhantomData;
use std::task::{Context, Poll};

use meshwire_swarm::{DummyBehaviour, NetworkBehaviour, StreamProtocol, ToSwarm};

/// A behaviour generic over its event.
pub struct Emit<E>(Option<E>);

impl<E: Send + 'static> NetworkBehaviour for Emit<E> {
    type Event = E;

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<E>> {
        match self.0.take() {
            Some(e) => Poll::Ready(ToSwarm::GenerateEvent(e)),
            None => Poll::Pending,
        }
    }
}

/// A behaviour that is generic but whose event is not.
pub struct Tagged<T>(PhantomData<fn() -> T>);

impl<T: 'static> NetworkBehaviour for Tagged<T> {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        Poll::Pending
    }
}

/// Generic with a default, a bound in the parameter list and a where clause.
#[derive(NetworkBehaviour)]
pub struct Generic<A: Send, T = u8, B = DummyBehaviour>
where
    B: Default,
{
    a: A,
    b: B,
    emit: Emit<T>,
    tagged: Tagged<T>,
    fixed: DummyBehaviour,
}

/// The user's event, generic over the composed behaviour's parameter.
#[derive(Debug)]
pub enum MyEvent<T> {
    /// From `emit`.
    Emitted(T),
    /// From `tagged`.
    Tagged,
}

impl<T> From<T> for MyEvent<T> {
    fn from(t: T) -> Self {
        MyEvent::Emitted(t)
    }
}

impl From<std::convert::Infallible> for MyEvent<()> {
    fn from(i: std::convert::Infallible) -> Self {
        match i {}
    }
}

/// A generic user event type.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "MyEvent<T>")]
pub struct GenericToSwarm<T: Send + 'static> {
    emit: Emit<T>,
}

/// A concrete instance of a generic user event type with a concrete struct.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "MyEvent<()>")]
pub struct ConcreteToSwarm {
    emit: Emit<()>,
    dummy: DummyBehaviour,
}

fn main() {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);

    let mut g: Generic<Emit<&'static str>> = Generic {
        a: Emit(Some("a")),
        b: DummyBehaviour,
        emit: Emit(Some(7)),
        tagged: Tagged(PhantomData),
        fixed: DummyBehaviour,
    };
    match g.poll(&mut cx) {
        Poll::Ready(ToSwarm::GenerateEvent(GenericEvent::A("a"))) => {}
        other => panic!("{other:?}"),
    }
    match g.poll(&mut cx) {
        Poll::Ready(ToSwarm::GenerateEvent(GenericEvent::Emit(7))) => {}
        other => panic!("{other:?}"),
    }
    assert!(g.poll(&mut cx).is_pending());
    assert_eq!(
        format!("{:?}", GenericEvent::<Emit<()>>::Tagged(())),
        "Tagged(())"
    );

    let mut t = GenericToSwarm {
        emit: Emit(Some(3u64)),
    };
    match t.poll(&mut cx) {
        Poll::Ready(ToSwarm::GenerateEvent(MyEvent::Emitted(3))) => {}
        other => panic!("{other:?}"),
    }

    let mut c = ConcreteToSwarm {
        emit: Emit(Some(())),
        dummy: DummyBehaviour,
    };
    match c.poll(&mut cx) {
        Poll::Ready(ToSwarm::GenerateEvent(MyEvent::Emitted(()))) => {}
        other => panic!("{other:?}"),
    }
    let _ = MyEvent::<()>::Tagged;
}
