use meshwire_swarm::NetworkBehaviour;

#[derive(NetworkBehaviour)]
struct Behaviour;

fn main() {}
