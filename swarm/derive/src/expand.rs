//! The expansion of `#[derive(NetworkBehaviour)]`.

use std::collections::HashSet;

use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, Type, WherePredicate};

use crate::attrs::{parse_struct_attrs, reject_field_attrs, Errors};
use crate::crate_path::swarm_crate;

/// One composed behaviour: a field of the struct.
struct Child<'a> {
    /// The field's name.
    ident: &'a Ident,
    /// The field's type.
    ty: &'a Type,
    /// Its variant in the generated event enum.
    variant: Ident,
    /// Its index in routes.
    index: Literal,
    /// Whether its type uses the struct's generic parameters.
    generic: bool,
}

/// Expands the derive on `input`, or says why it cannot.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(unnamed) => {
                return Err(syn::Error::new_spanned(
                    unnamed,
                    format!(
                        "#[derive(NetworkBehaviour)] needs named fields, one per composed \
                         behaviour; `{name}` is a tuple struct"
                    ),
                ))
            }
            Fields::Unit => {
                return Err(syn::Error::new_spanned(
                    name,
                    format!(
                        "#[derive(NetworkBehaviour)] needs named fields, one per composed \
                         behaviour; `{name}` is a unit struct"
                    ),
                ))
            }
        },
        Data::Enum(e) => {
            let enum_token = e.enum_token;
            return Err(syn::Error::new_spanned(
                quote!(#enum_token #name),
                format!(
                    "#[derive(NetworkBehaviour)] works on structs with named fields, one per \
                     composed behaviour; `{name}` is an enum"
                ),
            ));
        }
        Data::Union(u) => {
            let union_token = u.union_token;
            return Err(syn::Error::new_spanned(
                quote!(#union_token #name),
                format!(
                    "#[derive(NetworkBehaviour)] works on structs with named fields, one per \
                     composed behaviour; `{name}` is a union"
                ),
            ));
        }
    };
    if fields.named.len() > usize::from(u16::MAX) {
        return Err(syn::Error::new_spanned(
            name,
            format!(
                "#[derive(NetworkBehaviour)] composes at most {} behaviours; `{name}` has {} \
                 fields (nest compositions to compose more)",
                u16::MAX,
                fields.named.len()
            ),
        ));
    }

    let attrs = parse_struct_attrs(&input.attrs);
    let mut errors = Errors::default();
    let attrs = match attrs {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(e);
            None
        }
    };

    let generic_idents: HashSet<String> = input
        .generics
        .params
        .iter()
        .map(|p| match p {
            syn::GenericParam::Type(t) => t.ident.to_string(),
            syn::GenericParam::Lifetime(l) => l.lifetime.ident.to_string(),
            syn::GenericParam::Const(c) => c.ident.to_string(),
        })
        .collect();

    let mut children = Vec::with_capacity(fields.named.len());
    let mut variants_seen: HashSet<String> = HashSet::new();
    for (i, field) in fields.named.iter().enumerate() {
        reject_field_attrs(&field.attrs, &mut errors);
        let Some(ident) = field.ident.as_ref() else {
            errors.push(syn::Error::new_spanned(field, "every field needs a name"));
            continue;
        };
        let variant = match variant_name(ident) {
            Some(v) => v,
            None => {
                errors.push(syn::Error::new_spanned(
                    ident,
                    format!(
                        "cannot name an event variant after the field `{ident}`; rename the \
                         field or use #[behaviour(to_swarm = \"MyEvent\")]"
                    ),
                ));
                continue;
            }
        };
        if attrs.as_ref().is_some_and(|a| a.to_swarm.is_none())
            && !variants_seen.insert(variant.to_string())
        {
            errors.push(syn::Error::new_spanned(
                ident,
                format!(
                    "the field `{ident}` would name the same event variant `{variant}` as an \
                     earlier field; rename it or use #[behaviour(to_swarm = \"MyEvent\")]"
                ),
            ));
        }
        // The field count was checked against u16::MAX above, so this always converts.
        let Ok(index) = u16::try_from(i) else {
            continue;
        };
        children.push(Child {
            ident,
            ty: &field.ty,
            variant,
            index: Literal::u16_suffixed(index),
            generic: mentions_any(field.ty.to_token_stream(), &generic_idents),
        });
    }
    // Attributes that failed to parse left an error in `errors`, so `finish` returns it.
    let Some(attrs) = errors.finish(attrs)? else {
        return Err(syn::Error::new_spanned(
            name,
            "invalid #[behaviour(..)] attributes",
        ));
    };

    let krate = match &attrs.prelude {
        Some(path) => path.to_token_stream(),
        None => swarm_crate(),
    };
    let nb = quote!(#krate::NetworkBehaviour);

    // The implementation is bounded by `Field: NetworkBehaviour` for every field (and, with
    // `to_swarm`, `MyEvent: From<<Field as NetworkBehaviour>::Event>`), spanned on the
    // field's type. For a concrete type such a bound is a "trivial bound": when false, it is
    // the one error reported (on the field), and the body, which assumes it, adds none.
    let behaviour_bounds: Vec<WherePredicate> = children
        .iter()
        .map(|c| {
            let ty = c.ty;
            let nb = respan(nb.clone(), ty.span());
            syn::parse_quote!(#ty: #nb)
        })
        .collect();

    let mut items = TokenStream::new();
    let (event_ty, conversions, from_bounds) = match &attrs.to_swarm {
        Some(user) => {
            let mut bounds: Vec<WherePredicate> = Vec::new();
            let conversions: Vec<TokenStream> = children
                .iter()
                .map(|c| {
                    let ty = c.ty;
                    let user = respan(user.to_token_stream(), ty.span());
                    let nb = respan(nb.clone(), ty.span());
                    bounds.push(syn::parse_quote_spanned!(ty.span()=>
                        #user: ::core::convert::From<<#ty as #nb>::Event>
                    ));
                    quote_spanned!(ty.span()=>
                        <#user as ::core::convert::From<<#ty as #nb>::Event>>::from
                    )
                })
                .collect();
            (user.to_token_stream(), conversions, bounds)
        }
        None => {
            let enum_ident = format_ident!("{}Event", name);
            items.extend(event_enum(input, &enum_ident, &children, &nb));
            let (_, ty_generics, _) = input.generics.split_for_impl();
            let conversions = children
                .iter()
                .map(|c| {
                    let variant = &c.variant;
                    quote!(#enum_ident::#variant)
                })
                .collect();
            (quote!(#enum_ident #ty_generics), conversions, Vec::new())
        }
    };

    let mut generics = input.generics.clone();
    {
        let where_clause = generics.make_where_clause();
        where_clause.predicates.extend(behaviour_bounds);
        where_clause.predicates.extend(from_bounds);
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let methods = if children.is_empty() {
        quote! {
            fn protocols(&self) -> ::std::vec::Vec<#krate::StreamProtocol> {
                ::std::vec::Vec::new()
            }

            fn poll(
                &mut self,
                _cx: &mut ::core::task::Context<'_>,
            ) -> ::core::task::Poll<#krate::ToSwarm<Self::Event>> {
                ::core::task::Poll::Pending
            }
        }
    } else {
        methods(&children, &conversions, &krate, &nb)
    };

    items.extend(quote! {
        #[automatically_derived]
        impl #impl_generics #nb for #name #ty_generics #where_clause {
            type Event = #event_ty;

            #methods
        }
    });
    Ok(items)
}

/// The generated event enum and its `Debug` implementation.
fn event_enum(
    input: &DeriveInput,
    enum_ident: &Ident,
    children: &[Child<'_>],
    nb: &TokenStream,
) -> TokenStream {
    let vis = &input.vis;
    let name = &input.ident;
    // The variants hold `<Field as NetworkBehaviour>::Event`, so the enum needs
    // `Field: NetworkBehaviour`. For a concrete type the bound is written `for<'a> ..` so
    // that it is not a "trivial bound", an error when false: the implementation's bounds
    // report a field that is no behaviour, once.
    let mut generics = input.generics.clone();
    generics
        .make_where_clause()
        .predicates
        .extend(children.iter().map(|c| -> WherePredicate {
            let ty = c.ty;
            let nb = respan(nb.clone(), ty.span());
            if c.generic {
                syn::parse_quote!(#ty: #nb)
            } else {
                syn::parse_quote!(for<'__meshwire_a> #ty: #nb)
            }
        }));
    let where_clause = &generics.where_clause;
    // The declaration keeps the parameters' defaults; the impl drops them.
    let params = &generics.params;
    let declared = if params.is_empty() {
        quote!()
    } else {
        quote!(<#params>)
    };

    let doc = format!(
        "The events of [`{name}`], one variant per field; generated by \
         `#[derive(NetworkBehaviour)]`."
    );
    let variants = children.iter().map(|c| {
        let variant = &c.variant;
        let ty = c.ty;
        let doc = format!("An event of the field `{}`.", c.ident.unraw());
        quote_spanned! {ty.span()=>
            #[doc = #doc]
            #variant(<#ty as #nb>::Event)
        }
    });

    // `for<'__a>` keeps each bound from being a "trivial bound" (an error when false for a
    // concrete type): the `Debug` impl then simply does not apply when a child's event is
    // not `Debug`.
    let mut debug_generics = generics.clone();
    debug_generics
        .make_where_clause()
        .predicates
        .extend(children.iter().map(|c| -> WherePredicate {
            let ty = c.ty;
            syn::parse_quote!(
                for<'__meshwire_a> <#ty as #nb>::Event: ::core::fmt::Debug
            )
        }));
    let (impl_generics, ty_generics, debug_where) = debug_generics.split_for_impl();
    let arms = children.iter().map(|c| {
        let variant = &c.variant;
        let label = variant.to_string();
        quote!(#enum_ident::#variant(event) => f.debug_tuple(#label).field(event).finish(),)
    });
    let body = if children.is_empty() {
        quote!(match *self {})
    } else {
        quote!(match self { #(#arms)* })
    };

    quote! {
        // A public struct may compose private behaviours; the variants then name a private
        // type in `<Private as NetworkBehaviour>::Event`, although the event itself is
        // usually public.
        #[doc = #doc]
        #[allow(private_interfaces, private_bounds)]
        #vis enum #enum_ident #declared #where_clause {
            #(#variants,)*
        }

        #[automatically_derived]
        impl #impl_generics ::core::fmt::Debug for #enum_ident #ty_generics #debug_where {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                #body
            }
        }
    }
}

/// The methods of the implementation for at least one child.
fn methods(
    children: &[Child<'_>],
    conversions: &[TokenStream],
    krate: &TokenStream,
    nb: &TokenStream,
) -> TokenStream {
    let result = quote!(::core::result::Result);
    let denied = quote!(#krate::ConnectionDenied);
    let multiaddr = quote!(#krate::Multiaddr);
    let connection_id = quote!(#krate::ConnectionId);
    let peer_id = quote!(#krate::PeerId);
    let vec = quote!(::std::vec::Vec);

    let fields: Vec<&Ident> = children.iter().map(|c| c.ident).collect();
    let indices: Vec<&Literal> = children.iter().map(|c| &c.index).collect();
    // `<Field as NetworkBehaviour>`, spanned on the field's type so that a field that is no
    // behaviour is reported there.
    let as_nb: Vec<TokenStream> = children
        .iter()
        .map(|c| {
            let ty = c.ty;
            quote_spanned!(ty.span()=> <#ty as #nb>)
        })
        .collect();
    let keep_alive = as_nb.iter().zip(&fields).map(
        |(as_nb, field)| quote!(#as_nb::connection_keep_alive(&self.#field, peer, connection)),
    );

    quote! {
        fn protocols(&self) -> #vec<#krate::StreamProtocol> {
            let mut protocols: #vec<#krate::StreamProtocol> = #vec::new();
            #(
                for protocol in #as_nb::protocols(&self.#fields) {
                    if !protocols.contains(&protocol) {
                        protocols.push(protocol);
                    }
                }
            )*
            protocols
        }

        fn handle_pending_inbound_connection(
            &mut self,
            connection: #connection_id,
            local_addr: &#multiaddr,
            remote_addr: &#multiaddr,
        ) -> #result<(), #denied> {
            #(
                #as_nb::handle_pending_inbound_connection(
                    &mut self.#fields,
                    connection,
                    local_addr,
                    remote_addr,
                )?;
            )*
            #result::Ok(())
        }

        fn handle_established_inbound_connection(
            &mut self,
            connection: #connection_id,
            peer: #peer_id,
            local_addr: &#multiaddr,
            remote_addr: &#multiaddr,
        ) -> #result<(), #denied> {
            #(
                #as_nb::handle_established_inbound_connection(
                    &mut self.#fields,
                    connection,
                    peer,
                    local_addr,
                    remote_addr,
                )?;
            )*
            #result::Ok(())
        }

        fn handle_pending_outbound_connection(
            &mut self,
            connection: #connection_id,
            peer: ::core::option::Option<#peer_id>,
            addresses: &[#multiaddr],
        ) -> #result<#vec<#multiaddr>, #denied> {
            let mut extra: #vec<#multiaddr> = #vec::new();
            #(
                extra.extend(#as_nb::handle_pending_outbound_connection(
                    &mut self.#fields,
                    connection,
                    peer,
                    addresses,
                )?);
            )*
            #result::Ok(extra)
        }

        fn handle_established_outbound_connection(
            &mut self,
            connection: #connection_id,
            peer: #peer_id,
            addr: &#multiaddr,
        ) -> #result<(), #denied> {
            #(
                #as_nb::handle_established_outbound_connection(
                    &mut self.#fields,
                    connection,
                    peer,
                    addr,
                )?;
            )*
            #result::Ok(())
        }

        fn connection_keep_alive(&self, peer: #peer_id, connection: #connection_id) -> bool {
            #(#keep_alive)||*
        }

        fn on_swarm_event(&mut self, event: #krate::FromSwarm<'_>) {
            #( #as_nb::on_swarm_event(&mut self.#fields, event); )*
        }

        fn on_inbound_stream(&mut self, stream: #krate::InboundStream) {
            #(
                if #as_nb::protocols(&self.#fields).contains(&stream.protocol) {
                    return #as_nb::on_inbound_stream(&mut self.#fields, stream);
                }
            )*
            // No child accepts the protocol: refuse the stream.
            let mut stream = stream;
            stream.stream.reset();
        }

        fn on_outbound_stream(&mut self, result: #krate::OutboundStreamResult) {
            let mut result = result;
            match result.route.pop() {
                #(
                    ::core::option::Option::Some(#indices) => {
                        #as_nb::on_outbound_stream(&mut self.#fields, result)
                    }
                )*
                // Not a request of ours: nobody waits for it. Dropping a stream resets it.
                _ => {}
            }
        }

        fn poll(
            &mut self,
            cx: &mut ::core::task::Context<'_>,
        ) -> ::core::task::Poll<#krate::ToSwarm<Self::Event>> {
            #(
                if let ::core::task::Poll::Ready(command) = #as_nb::poll(&mut self.#fields, cx) {
                    return ::core::task::Poll::Ready(#krate::ToSwarm::push_route(
                        #krate::ToSwarm::map_event(command, #conversions),
                        #indices,
                    ));
                }
            )*
            ::core::task::Poll::Pending
        }
    }
}

/// The UpperCamelCase variant name for a field, if it makes an identifier.
fn variant_name(field: &Ident) -> Option<Ident> {
    let raw = field.unraw().to_string();
    let mut name = String::with_capacity(raw.len());
    for part in raw.split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    // Rejects "", names starting with a digit and keywords such as `Self`.
    let ident = syn::parse_str::<Ident>(&name).ok()?;
    Some(Ident::new(&ident.to_string(), field.span()))
}

/// `tokens`, every one of them spanned at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                TokenTree::Group(group)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// Whether `tokens` contain one of `idents` (the struct's generic parameters).
fn mentions_any(tokens: TokenStream, idents: &HashSet<String>) -> bool {
    if idents.is_empty() {
        return false;
    }
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => idents.contains(&i.to_string()),
        TokenTree::Group(g) => mentions_any(g.stream(), idents),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(src: &str) -> syn::Result<TokenStream> {
        expand(&syn::parse_str::<DeriveInput>(src).expect("parses"))
    }

    #[test]
    fn variant_names() {
        let v = |s: &str| variant_name(&syn::parse_str::<Ident>(s).unwrap()).map(|i| i.to_string());
        assert_eq!(v("ping").as_deref(), Some("Ping"));
        assert_eq!(v("my_kad").as_deref(), Some("MyKad"));
        assert_eq!(v("r#type").as_deref(), Some("Type"));
        assert_eq!(v("_private").as_deref(), Some("Private"));
        assert_eq!(v("kad2").as_deref(), Some("Kad2"));
        assert_eq!(v("self_"), None);
        assert_eq!(v("_1"), None);
    }

    #[test]
    fn too_many_fields() {
        let fields: String = (0..=u32::from(u16::MAX))
            .map(|i| format!("f{i}: B,"))
            .collect();
        let err = expand_str(&format!("struct S {{ {fields} }}")).unwrap_err();
        assert!(err.to_string().contains("at most 65535"), "{err}");
    }

    #[test]
    fn colliding_variants() {
        let err =
            expand_str("#[behaviour(prelude = \"x\")] struct S { a_b: B, a__b: B }").unwrap_err();
        assert!(err.to_string().contains("same event variant `AB`"), "{err}");
        // No enum, no collision.
        expand_str("#[behaviour(prelude = \"x\", to_swarm = \"E\")] struct S { a_b: B, a__b: B }")
            .unwrap();
    }

    #[test]
    fn attribute_errors_are_reported_together() {
        let err =
            expand_str("#[behaviour(nope = 1, to_swarm = 5)] struct S { #[behaviour(x)] a: B }")
                .unwrap_err();
        let all: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[0].contains("unknown key `nope`"), "{all:?}");
        assert!(all[1].contains("expected a string literal"), "{all:?}");
        assert!(all[2].contains("not supported on fields"), "{all:?}");
    }

    #[test]
    fn malformed_to_swarm() {
        let err =
            expand_str("#[behaviour(to_swarm = \"My Event\")] struct S { a: B }").unwrap_err();
        assert!(
            err.to_string().contains("`to_swarm` must name a type"),
            "{err}"
        );
        let err = expand_str("#[behaviour(to_swarm = \"E\", to_swarm = \"F\")] struct S { a: B }")
            .unwrap_err();
        assert!(err.to_string().contains("duplicate `to_swarm`"), "{err}");
    }

    #[test]
    fn generic_detection() {
        let ids: HashSet<String> = ["T".to_string()].into();
        assert!(mentions_any(quote!(Vec<Option<T>>), &ids));
        assert!(mentions_any(quote!(<T as Tr>::X), &ids));
        assert!(!mentions_any(quote!(Vec<Tx>), &ids));
    }

    #[test]
    fn prelude_override_is_used() {
        let out = expand_str("#[behaviour(prelude = \"::my::swarm\")] struct S { a: B }")
            .unwrap()
            .to_string();
        assert!(out.contains(":: my :: swarm :: NetworkBehaviour"), "{out}");
        assert!(!out.contains("meshwire_swarm"), "{out}");
    }
}
