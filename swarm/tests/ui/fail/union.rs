use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

#[derive(NetworkBehaviour)]
union Behaviour {
    a: DummyBehaviour,
}

fn main() {}
