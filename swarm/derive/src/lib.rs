//! `#[derive(NetworkBehaviour)]`: composes several behaviours of `meshwire-swarm` into one.
//!
//! Use it through the swarm crate, which re-exports it as `meshwire_swarm::NetworkBehaviour`
//! (feature `macros`, on by default), or through the facade as
//! `meshwire::swarm::NetworkBehaviour`. Derive it on a struct with named fields, each of a
//! type that implements `NetworkBehaviour`:
//!
//! ```ignore
//! use meshwire_swarm::NetworkBehaviour;
//!
//! #[derive(NetworkBehaviour)]
//! pub struct Behaviour {
//!     ping: meshwire_ping::Behaviour,
//!     identify: meshwire_identify::Behaviour,
//! }
//!
//! // Generated next to the struct, with the struct's visibility and generics:
//! //
//! // pub enum BehaviourEvent {
//! //     Ping(<meshwire_ping::Behaviour as NetworkBehaviour>::Event),
//! //     Identify(<meshwire_identify::Behaviour as NetworkBehaviour>::Event),
//! // }
//! ```
//!
//! (This example is not compiled here; the swarm crate's tests `derive_dispatch.rs` and
//! `tests/ui/pass/*.rs` are runnable ones.)
//!
//! # What the generated implementation does
//!
//! Children are the fields, in declaration order; child `i` is the field at index `i`.
//!
//! - `protocols()`: every child's protocols, concatenated, duplicates removed (the first
//!   occurrence is kept).
//! - The four `handle_*_connection` hooks call every child in order and return the first
//!   `Err` (later children are not asked). `handle_pending_outbound_connection` returns the
//!   extra addresses of all children, concatenated.
//! - `connection_keep_alive`: `true` if any child says `true`.
//! - `on_swarm_event`: every child gets the event.
//! - `on_inbound_stream`: the first child whose `protocols()` contains the stream's protocol
//!   gets it; a stream no child claims is reset and dropped.
//! - `on_outbound_stream`: the result goes to the child that asked for the stream. Every
//!   `ToSwarm::OpenStream` leaving `poll` has its child's index pushed onto its route, and the
//!   result's route is popped on the way back down, so nested compositions work. A result
//!   with an empty route or an unknown index is dropped.
//! - `poll`: children are polled in order; the first ready command is returned, its event
//!   converted (see below). `Pending` if every child is pending.
//!
//! # The event type
//!
//! By default the macro generates `enum <StructName>Event` beside the struct, with the
//! struct's visibility and generics and one variant per field, named after the field in
//! UpperCamelCase (`ping` → `Ping`, `my_kad` → `MyKad`), holding that child's event. It
//! implements `Debug` when every child's event does.
//!
//! With `#[behaviour(to_swarm = "MyEvent")]` the macro generates no enum: the composed
//! behaviour's event is `MyEvent`, and each child's event is converted with
//! `From`, so `MyEvent` needs `From<<Child as NetworkBehaviour>::Event>` for every field.
//!
//! ```ignore
//! #[derive(NetworkBehaviour)]
//! #[behaviour(to_swarm = "MyEvent")]
//! struct Behaviour {
//!     ping: meshwire_ping::Behaviour,
//!     identify: meshwire_identify::Behaviour,
//! }
//!
//! enum MyEvent {
//!     Ping(meshwire_ping::Event),
//!     Identify(meshwire_identify::Event),
//! }
//! impl From<meshwire_ping::Event> for MyEvent { /* ... */ }
//! impl From<meshwire_identify::Event> for MyEvent { /* ... */ }
//! ```
//!
//! # Generics and bounds
//!
//! Generic structs are supported. The implementation is bounded by
//! `Field: NetworkBehaviour` for every field (and, with `to_swarm`, by
//! `MyEvent: From<<Field as NetworkBehaviour>::Event>`), besides the struct's own bounds and
//! `where` clause; the generated enum keeps the struct's parameters, their defaults and its
//! `where` clause. A field whose type is no behaviour, or a missing `From` implementation,
//! is reported once, on the field.
//!
//! # Attributes
//!
//! On the struct, `#[behaviour(...)]` accepts:
//!
//! - `to_swarm = "Type"`: the event type, see above.
//! - `prelude = "path"`: the path of the swarm crate in the generated code. By default the
//!   macro reads the deriving crate's `Cargo.toml`: `::meshwire_swarm` (or its renamed name)
//!   if the crate depends on `meshwire-swarm`, else `::meshwire::swarm` if it depends on the
//!   `meshwire` facade, else `::meshwire_swarm`. Inside the `meshwire-swarm` crate itself the
//!   path is `::meshwire_swarm` too, which its library can make valid with
//!   `extern crate self as meshwire_swarm;`.
//!
//! Fields take no attributes: every field is a composed behaviour.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

mod attrs;
mod crate_path;
mod expand;

/// Derives `NetworkBehaviour` for a struct whose named fields are all behaviours; see the
/// [crate documentation](crate) for the generated implementation, the event type and the
/// `#[behaviour(to_swarm = "..", prelude = "..")]` attribute.
#[proc_macro_derive(NetworkBehaviour, attributes(behaviour))]
pub fn derive_network_behaviour(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
