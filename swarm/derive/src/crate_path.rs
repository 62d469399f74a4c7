//! Finding the path of the swarm crate from the deriving crate's `Cargo.toml`.

use proc_macro2::{Ident, Span, TokenStream};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::quote;

/// The path under which the deriving crate reaches `meshwire-swarm`.
///
/// - A dependency on `meshwire-swarm` (possibly renamed): `::meshwire_swarm` (or the new
///   name). proc-macro-crate also answers this for the integration tests and benches of
///   `meshwire-swarm` itself.
/// - Any other target of `meshwire-swarm` itself (its library, doctests, examples):
///   `::meshwire_swarm`, which the library can make resolve with
///   `extern crate self as meshwire_swarm;`. (`crate` would be wrong for doctests and
///   examples, which are separate crates.)
/// - Else a dependency on the `meshwire` facade: `::meshwire::swarm` (or the renamed name).
/// - Else (no manifest, e.g. a build outside cargo): `::meshwire_swarm`; use
///   `#[behaviour(prelude = "...")]` to say otherwise.
pub(crate) fn swarm_crate() -> TokenStream {
    match crate_name("meshwire-swarm") {
        Ok(FoundCrate::Itself) => quote!(::meshwire_swarm),
        Ok(FoundCrate::Name(name)) => {
            let name = Ident::new(&name, Span::call_site());
            quote!(::#name)
        }
        Err(_) => match crate_name("meshwire") {
            Ok(FoundCrate::Itself) => quote!(::meshwire::swarm),
            Ok(FoundCrate::Name(name)) => {
                let name = Ident::new(&name, Span::call_site());
                quote!(::#name::swarm)
            }
            Err(_) => quote!(::meshwire_swarm),
        },
    }
}
