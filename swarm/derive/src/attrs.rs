//! Parsing of `#[behaviour(...)]`.

use syn::{Attribute, LitStr, Path, Type};

/// The name of the macro's helper attribute.
pub(crate) const ATTR: &str = "behaviour";

/// What the struct's `#[behaviour(...)]` attributes say.
#[derive(Default)]
pub(crate) struct StructAttrs {
    /// `to_swarm = "Type"`: the user's event type.
    pub(crate) to_swarm: Option<Type>,
    /// `prelude = "path"`: the path of the swarm crate.
    pub(crate) prelude: Option<Path>,
}

/// Parses every `#[behaviour(...)]` attribute of the struct, reporting all errors at once.
pub(crate) fn parse_struct_attrs(attrs: &[Attribute]) -> syn::Result<StructAttrs> {
    let mut out = StructAttrs::default();
    let mut errors = Errors::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident(ATTR)) {
        let result = attr.parse_nested_meta(|meta| {
            // Errors in one key are recorded and parsing goes on with the next key, so that
            // all of them are reported at once.
            if let Err(e) = parse_key(&meta, &mut out) {
                errors.push(e);
                skip_value(&meta);
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    errors.finish(out)
}

/// Parses one `key = value` of `#[behaviour(...)]` into `out`.
fn parse_key(meta: &syn::meta::ParseNestedMeta<'_>, out: &mut StructAttrs) -> syn::Result<()> {
    if meta.path.is_ident("to_swarm") {
        let lit = string_value(meta, "to_swarm", "MyEvent")?;
        if out.to_swarm.is_some() {
            return Err(syn::Error::new(
                lit.span(),
                "duplicate `to_swarm` in #[behaviour(...)]",
            ));
        }
        let ty = lit.parse::<Type>().map_err(|e| {
            syn::Error::new(
                lit.span(),
                format!(
                    "`to_swarm` must name a type, e.g. `to_swarm = \"MyEvent\"`; {:?} is \
                     not one ({e})",
                    lit.value()
                ),
            )
        })?;
        out.to_swarm = Some(ty);
        Ok(())
    } else if meta.path.is_ident("prelude") {
        let lit = string_value(meta, "prelude", "meshwire::swarm")?;
        if out.prelude.is_some() {
            return Err(syn::Error::new(
                lit.span(),
                "duplicate `prelude` in #[behaviour(...)]",
            ));
        }
        let path = lit.parse_with(Path::parse_mod_style).map_err(|e| {
            syn::Error::new(
                lit.span(),
                format!(
                    "`prelude` must be the path of the swarm crate, e.g. \
                     `prelude = \"::meshwire::swarm\"`; {:?} is not one ({e})",
                    lit.value()
                ),
            )
        })?;
        out.prelude = Some(path);
        Ok(())
    } else {
        let key = quote::ToTokens::to_token_stream(&meta.path)
            .to_string()
            .replace(' ', "");
        Err(syn::Error::new_spanned(
            &meta.path,
            format!(
                "unknown key `{key}` in #[behaviour(...)]; the keys are `to_swarm` \
                 and `prelude`"
            ),
        ))
    }
}

/// Skips what is left of the current key's value: the tokens up to the next `,`.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) {
    let _ = meta.input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if let proc_macro2::TokenTree::Punct(p) = &tt {
                if p.as_char() == ',' {
                    break;
                }
            }
            rest = next;
        }
        Ok(((), rest))
    });
}

/// Rejects `#[behaviour(...)]` on a field.
pub(crate) fn reject_field_attrs(attrs: &[Attribute], errors: &mut Errors) {
    for attr in attrs.iter().filter(|a| a.path().is_ident(ATTR)) {
        errors.push(syn::Error::new_spanned(
            attr,
            "#[behaviour(...)] is not supported on fields: every field of a \
             #[derive(NetworkBehaviour)] struct is a composed behaviour",
        ));
    }
}

/// The string literal after `key =`, with a clear error if there is none.
fn string_value(
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<LitStr> {
    let hint = format!("expected a string literal: `{key} = \"{example}\"`");
    let value = meta.value().map_err(|_| {
        syn::Error::new_spanned(
            &meta.path,
            format!("`{key}` needs a value: `{key} = \"{example}\"`"),
        )
    })?;
    value
        .parse::<LitStr>()
        .map_err(|e| syn::Error::new(e.span(), &hint))
}

/// Collects errors to report them together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds an error.
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// `Ok(value)` if there was no error, else all of them.
    pub(crate) fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}
