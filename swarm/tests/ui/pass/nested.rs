//! A derived composition inside another, and an explicit `prelude` path.
#![deny(warnings, missing_docs)]

use std::task::{Context, Poll};

use meshwire_swarm::{NetworkBehaviour, OpenStream, PeerId, StreamProtocol, ToSwarm};

/// Asks for one stream.
pub struct Opener(Option<PeerId>, &'static str);

impl NetworkBehaviour for Opener {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![StreamProtocol::new(self.1)]
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        match self.0.take() {
            Some(peer) => Poll::Ready(ToSwarm::OpenStream(OpenStream::new(
                peer,
                StreamProtocol::new(self.1),
            ))),
            None => Poll::Pending,
        }
    }
}

/// The inner composition.
#[derive(NetworkBehaviour)]
pub struct Inner {
    x: Opener,
    y: Opener,
}

/// Another path to the swarm crate.
pub mod swarm {
    pub use meshwire_swarm::*;
}

/// The outer composition, naming the swarm crate through `prelude`.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "crate::swarm")]
pub struct Outer {
    z: Opener,
    inner: Inner,
}

fn main() {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let peer = PeerId::random();
    let mut o = Outer {
        z: Opener(None, "/z/1"),
        inner: Inner {
            x: Opener(None, "/x/1"),
            y: Opener(Some(peer), "/y/1"),
        },
    };
    let names: Vec<String> = o.protocols().iter().map(|p| p.to_string()).collect();
    assert_eq!(names, ["/z/1", "/x/1", "/y/1"]);
    match o.poll(&mut cx) {
        Poll::Ready(ToSwarm::OpenStream(mut open)) => {
            // Outer index first on the way down, then the inner one.
            assert_eq!(open.route.pop(), Some(1));
            assert_eq!(open.route.pop(), Some(1));
            assert_eq!(open.route.pop(), None);
        }
        other => panic!("{other:?}"),
    }
    let _: OuterEvent = OuterEvent::Inner(InnerEvent::X(()));
}
