//! Procedural macros of the runtime. They generate code against `::ray::__private` and
//! nothing else, so the runtime can change beneath them.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{FnArg, GenericArgument, ItemFn, Meta, PathArguments, ReturnType, Token, Type};

/// Makes a function remote: `f::remote(args)` submits it and returns an `ObjectRef` at once,
/// `f::options().num_cpus(2.0).remote(args)` sets options per call, and `f(args)` still calls
/// it locally. Each argument takes a value or an `ObjectRef` of the same type. A function
/// returning `Result<T, E>` gives an `ObjectRef<T>`; `Err(e)` becomes a task error carrying
/// `e.to_string()`.
///
/// Options: `num_cpus`, `num_gpus`, `memory`, `max_retries`, e.g.
/// `#[ray::remote(num_cpus = 0.5, max_retries = 0)]`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_tokens: Tokens = item.clone().into();
    match expand(attr.into(), item.into()) {
        Ok(t) => t.into(),
        // Keep the user's function so editors and other errors stay useful.
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#item_tokens #err).into()
        }
    }
}

fn expand(attr: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let func: ItemFn = syn::parse2(item)?;
    let options = parse_options(attr)?;
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a remote function cannot be generic: workers look it up by one name",
        ));
    }
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "a remote function cannot be async yet",
        ));
    }
    let name = &sig.ident;
    let vis = &func.vis;
    let mut arg_types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(syn::Error::new_spanned(
                        r,
                        "a remote function takes its arguments by value (they cross processes)",
                    ));
                }
                arg_types.push((*pt.ty).clone());
            }
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "a remote function cannot take self",
                ))
            }
        }
    }
    let params: Vec<_> = (0..arg_types.len())
        .map(|i| format_ident!("arg{}", i))
        .collect();
    let (ret_type, is_result) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => (ok, true),
            None => ((**ty).clone(), false),
        },
    };
    let encode = if is_result {
        quote!(::ray::__private::encode_result(__value))
    } else {
        quote!(::ray::__private::encode_return(&__value))
    };
    let option_calls = options.iter().map(|(k, v)| quote!(.#k(#v)));
    let doc =
        format!("Remote call API of [`fn@{name}`]: `{name}::remote(..)`, `{name}::options()`.");
    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_snake_case, unused_imports, clippy::all)]
        #vis mod #name {
            use super::*;

            const NAME: &str = ::core::module_path!();

            #[::ray::__private::linkme::distributed_slice(::ray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::ray::__private::linkme)]
            static ENTRY: ::ray::__private::RemoteFunction = ::ray::__private::RemoteFunction {
                name: NAME,
                invoke,
            };

            fn invoke(
                __args: &mut ::ray::__private::ArgReader<'_>,
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::ray::__private::TaskFailure> {
                #( let #params: #arg_types = __args.next_arg()?; )*
                __args.finish()?;
                let __value = super::#name(#(#params),*);
                #encode
            }

            /// Per-call options; finish with `.remote(..)`.
            pub struct Options(::ray::TaskOptions);

            /// Options for one call, starting from the function's defaults.
            pub fn options() -> Options {
                Options(::ray::TaskOptions::default() #(#option_calls)*)
            }

            impl Options {
                /// CPUs the call needs.
                pub fn num_cpus(self, n: f64) -> Self { Options(self.0.num_cpus(n)) }
                /// GPUs the call needs.
                pub fn num_gpus(self, n: f64) -> Self { Options(self.0.num_gpus(n)) }
                /// Memory the call needs, in bytes.
                pub fn memory(self, bytes: f64) -> Self { Options(self.0.memory(bytes)) }
                /// A custom resource the call needs.
                pub fn resources(self, name: &str, amount: f64) -> Self { Options(self.0.resources(name, amount)) }
                /// Retries if the worker dies.
                pub fn max_retries(self, n: i32) -> Self { Options(self.0.max_retries(n)) }
                /// Submits the call.
                pub fn remote(self, #( #params: impl ::core::convert::Into<::ray::Arg<#arg_types>> ),*) -> ::ray::ObjectRef<#ret_type> {
                    ::ray::__private::submit(NAME, &self.0, ::std::vec![
                        #( ::ray::__private::arg::<#arg_types>(#params.into()) ),*
                    ])
                }
            }

            /// Submits a call with the default options; returns at once.
            pub fn remote(#( #params: impl ::core::convert::Into<::ray::Arg<#arg_types>> ),*) -> ::ray::ObjectRef<#ret_type> {
                options().remote(#(#params),*)
            }
        }
    })
}

/// `T` of a return type spelled `Result<T, ..>` (any path ending in `Result`).
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn parse_options(attr: Tokens) -> syn::Result<Vec<(syn::Ident, syn::Expr)>> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let mut out = Vec::new();
    for m in metas {
        let Meta::NameValue(nv) = m else {
            return Err(syn::Error::new_spanned(m, "expected `name = value`"));
        };
        let Some(ident) = nv.path.get_ident().cloned() else {
            return Err(syn::Error::new_spanned(nv.path, "expected an option name"));
        };
        match ident.to_string().as_str() {
            "num_cpus" | "num_gpus" | "memory" | "max_retries" => out.push((ident, nv.value)),
            other => {
                return Err(syn::Error::new_spanned(
                    ident,
                    format!(
                    "unknown option `{other}`: expected num_cpus, num_gpus, memory or max_retries"
                ),
                ))
            }
        }
    }
    Ok(out)
}
