use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

// Two unknown keys and a valid one: both unknown keys are reported.
#[derive(NetworkBehaviour)]
#[behaviour(out_event = "MyEvent", prelude = "meshwire_swarm", ignore)]
struct Behaviour {
    dummy: DummyBehaviour,
}

fn main() {}
