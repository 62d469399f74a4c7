use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

#[derive(NetworkBehaviour)]
enum Behaviour {
    A(DummyBehaviour),
    B(DummyBehaviour),
}

fn main() {}
