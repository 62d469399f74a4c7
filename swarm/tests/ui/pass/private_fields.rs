//! A public composition of private behaviours, in a module, compiles without warnings.
#![deny(warnings, missing_docs)]

mod inner {
    use std::task::{Context, Poll};

    use meshwire_swarm::{NetworkBehaviour, StreamProtocol, ToSwarm};

    struct Private;

    impl NetworkBehaviour for Private {
        type Event = ();

        fn protocols(&self) -> Vec<StreamProtocol> {
            Vec::new()
        }

        fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
            Poll::Pending
        }
    }

    /// Public, with a private field.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        private: Private,
    }

    impl Behaviour {
        /// A new one.
        pub fn new() -> Self {
            Behaviour { private: Private }
        }
    }
}

fn main() {
    use meshwire_swarm::NetworkBehaviour;
    let b = inner::Behaviour::new();
    assert!(b.protocols().is_empty());
    let _: Option<inner::BehaviourEvent> = None;
}
