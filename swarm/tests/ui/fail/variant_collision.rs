use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

#[derive(NetworkBehaviour)]
struct Behaviour {
    my_ping: DummyBehaviour,
    my__ping: DummyBehaviour,
    self_: DummyBehaviour,
}

fn main() {}
