use meshwire_swarm::{DummyBehaviour, NetworkBehaviour};

// Not a string.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = MyEvent)]
struct A {
    dummy: DummyBehaviour,
}

// A string that is not a type.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "My Event")]
struct B {
    dummy: DummyBehaviour,
}

// No value.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm)]
struct C {
    dummy: DummyBehaviour,
}

// Twice.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "MyEvent")]
#[behaviour(to_swarm = "MyEvent")]
struct D {
    dummy: DummyBehaviour,
}

enum MyEvent {}

fn main() {}
