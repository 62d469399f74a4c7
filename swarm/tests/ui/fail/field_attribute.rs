use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

#[derive(NetworkBehaviour)]
struct Behaviour {
    #[behaviour(ignore)]
    dummy: DummyBehaviour,
}

fn main() {}
