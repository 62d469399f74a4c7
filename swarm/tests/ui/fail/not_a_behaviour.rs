use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

struct NotABehaviour;

#[derive(NetworkBehaviour)]
struct Behaviour {
    dummy: DummyBehaviour,
    oops: NotABehaviour,
}

fn main() {}
