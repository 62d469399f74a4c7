use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

#[derive(NetworkBehaviour)]
struct Behaviour(DummyBehaviour, DummyBehaviour);

fn main() {}
