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
/// Options: `num_cpus`, `num_gpus`, `memory`, `max_retries`, `retry_exceptions`, e.g.
/// `#[ray::remote(num_cpus = 0.5, max_retries = 0)]`, and `num_returns = n`: a function
/// returning a tuple of `n` values (or `Result` of one) gives a tuple of `n` refs, each an
/// object of its own.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_tokens: Tokens = item.clone().into();
    or_error(item_tokens, expand(attr.into(), item.into()))
}

fn expand(attr: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let func: ItemFn = syn::parse2(item)?;
    let mut options = parse_options(attr)?;
    let num_returns = take_num_returns(&mut options)?;
    let streaming_flag = take_streaming(&mut options);
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
    let returns = match num_returns {
        None => None,
        Some((n, span)) => Some(return_types(&ret_type, n, span)?),
    };
    // A streaming function: `-> impl Iterator<Item = T>`, or any iterable with `streaming`.
    let stream_item = match (iterator_item(&ret_type), streaming_flag) {
        (Some(item), _) => Some(item),
        (None, Some(_)) => Some(syn::parse_quote!(<#ret_type as ::core::iter::IntoIterator>::Item)),
        (None, None) => None,
    };
    if let (Some(_), Some((_, span))) = (&stream_item, num_returns) {
        return Err(syn::Error::new(
            span,
            "a streaming function gives one ref per item: it has no num_returns",
        ));
    }
    let failure = task_failure(quote!(e));
    let unwrap_result = is_result.then(|| {
        quote! {
            let __value = match __value {
                ::core::result::Result::Ok(v) => v,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(#failure),
            };
        }
    });
    let encode = match (&returns, is_result) {
        _ if stream_item.is_some() => quote! {
            #unwrap_result
            for __item in __value {
                ::ray::__private::yield_item(&__item)?;
            }
            ::ray::__private::encode_return(&())
        },
        (None, true) => quote! {
            match __value {
                ::core::result::Result::Ok(v) => ::ray::__private::encode_return(&v),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(#failure),
            }
        },
        (None, false) => quote!(::ray::__private::encode_return(&__value)),
        (Some(types), _) => {
            let parts: Vec<_> = (0..types.len())
                .map(|i| format_ident!("__r{}", i))
                .collect();
            quote! {
                #unwrap_result
                let (#(#parts,)*) = __value;
                ::core::result::Result::Ok(::ray::__private::join_returns(&[
                    #( ::ray::__private::encode_return(&#parts)? ),*
                ]))
            }
        }
    };
    let (remote_type, submit_call) = match &returns {
        None if stream_item.is_some() => (
            quote!(::ray::ObjectRefGenerator<#stream_item>),
            quote! {
                ::ray::__private::submit_streaming(NAME, &self.0, ::std::vec![
                    #( ::ray::__private::arg::<#arg_types>(#params.into()) ),*
                ])
            },
        ),
        None => (
            quote!(::ray::ObjectRef<#ret_type>),
            quote! {
                ::ray::__private::submit(NAME, &self.0, ::std::vec![
                    #( ::ray::__private::arg::<#arg_types>(#params.into()) ),*
                ])
            },
        ),
        Some(types) => {
            let n = types.len() as u32;
            let takes = types.iter().map(|_| quote!(__refs.next()));
            (
                quote!(( #( ::ray::ObjectRef<#types>, )* )),
                quote! {
                    let mut __refs = ::ray::__private::submit_returns(NAME, &self.0, ::std::vec![
                        #( ::ray::__private::arg::<#arg_types>(#params.into()) ),*
                    ], #n);
                    ( #( #takes, )* )
                },
            )
        }
    };
    let option_calls = options.iter().map(|(k, v)| quote!(.#k(#v)));
    let doc =
        format!("Remote call API of [`fn@{name}`]: `{name}::remote(..)`, `{name}::options()`.");
    // A type of the function's name (types and functions have names of their own, so `f(..)`
    // still calls the function): `f::remote(..)` works wherever `f` is declared, in a module
    // or inside a function body, with the argument types resolved where the user wrote them.
    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        #[allow(non_snake_case, clippy::all)]
        const _: () = {
            const NAME: &str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name));

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
                let __value = #name(#(#params),*);
                #encode
            }

            /// Per-call options; finish with `.remote(..)`.
            pub struct Options(::ray::TaskOptions);

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
                /// Retries (within `max_retries`) if the call returns `Err` or panics, too.
                pub fn retry_exceptions(self, retry: bool) -> Self { Options(self.0.retry_exceptions(retry)) }
                /// Where the call may run.
                pub fn scheduling_strategy(self, strategy: ::ray::SchedulingStrategy) -> Self { Options(self.0.scheduling_strategy(strategy)) }
                /// An environment variable of the worker process that runs the call.
                pub fn env_var(self, name: &str, value: &str) -> Self { Options(self.0.env_var(name, value)) }
                /// Submits the call.
                pub fn remote(self, #( #params: impl ::core::convert::Into<::ray::Arg<#arg_types>> ),*) -> #remote_type {
                    #submit_call
                }
            }

            impl #name {
                /// Options for one call, starting from the function's defaults.
                pub fn options() -> Options {
                    Options(::ray::TaskOptions::default() #(#option_calls)*)
                }

                /// Submits a call with the default options; returns at once.
                pub fn remote(#( #params: impl ::core::convert::Into<::ray::Arg<#arg_types>> ),*) -> #remote_type {
                    Self::options().remote(#(#params),*)
                }
            }
        };
    })
}

/// Removes `num_returns = n` from the options: `Some(n)` when n > 1 (1 is the default).
fn take_num_returns(
    options: &mut Vec<(syn::Ident, syn::Expr)>,
) -> syn::Result<Option<(usize, proc_macro2::Span)>> {
    let Some(i) = options.iter().position(|(k, _)| k == "num_returns") else {
        return Ok(None);
    };
    let (key, value) = options.remove(i);
    let n = match &value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(n),
            ..
        }) => n.base10_parse::<usize>()?,
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "num_returns takes a number: the return type is a tuple of that many values",
            ))
        }
    };
    match n {
        0 => Err(syn::Error::new_spanned(
            value,
            "num_returns must be at least 1",
        )),
        1 => Ok(None),
        n => Ok(Some((n, key.span()))),
    }
}

/// The task failure of `Err(#e)`: its value kept when its type can be encoded (see
/// `ray::__private::ErrorBox`), its message otherwise.
fn task_failure(e: Tokens) -> Tokens {
    quote! {{
        #[allow(unused_imports)]
        use ::ray::__private::{KeepValue as _, MessageOnly as _};
        (&&::ray::__private::ErrorBox(#e)).into_failure()
    }}
}

/// Removes a bare `streaming` from the options: its span if it was there.
fn take_streaming(options: &mut Vec<(syn::Ident, syn::Expr)>) -> Option<proc_macro2::Span> {
    let i = options.iter().position(|(k, _)| k == "streaming")?;
    Some(options.remove(i).0.span())
}

/// `T` of a return type spelled `impl Iterator<Item = T>` (with any other bounds).
fn iterator_item(ty: &Type) -> Option<Type> {
    let Type::ImplTrait(it) = ty else { return None };
    it.bounds.iter().find_map(|b| {
        let syn::TypeParamBound::Trait(t) = b else {
            return None;
        };
        let last = t.path.segments.last()?;
        if last.ident != "Iterator" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|a| match a {
            GenericArgument::AssocType(at) if at.ident == "Item" => Some(at.ty.clone()),
            _ => None,
        })
    })
}

/// The element types of `ret`, which must be a tuple of `n`.
fn return_types(ret: &Type, n: usize, span: proc_macro2::Span) -> syn::Result<Vec<Type>> {
    match ret {
        Type::Tuple(t) if t.elems.len() == n => Ok(t.elems.iter().cloned().collect()),
        Type::Tuple(t) => Err(syn::Error::new_spanned(
            t,
            format!(
                "num_returns = {n}, but this tuple has {} elements",
                t.elems.len()
            ),
        )),
        _ => Err(syn::Error::new(
            span,
            format!("num_returns = {n} needs a return type that is a tuple of {n} values"),
        )),
    }
}

/// The expansion, or on an error the user's item as written followed by the error: editors
/// and the compiler's other messages still see the item.
fn or_error(item: Tokens, expanded: syn::Result<Tokens>) -> TokenStream {
    match expanded {
        Ok(t) => t.into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#item #err).into()
        }
    }
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
        if let Meta::Path(p) = &m {
            if p.is_ident("streaming") {
                let ident = p.get_ident().cloned().expect("checked");
                out.push((ident, syn::parse_quote!(true)));
                continue;
            }
        }
        let Meta::NameValue(nv) = m else {
            return Err(syn::Error::new_spanned(
                m,
                "expected `name = value` (or `streaming`)",
            ));
        };
        let Some(ident) = nv.path.get_ident().cloned() else {
            return Err(syn::Error::new_spanned(nv.path, "expected an option name"));
        };
        match ident.to_string().as_str() {
            "num_cpus" | "num_gpus" | "memory" | "max_retries" | "retry_exceptions"
            | "num_returns" => out.push((ident, nv.value)),
            other => {
                return Err(syn::Error::new_spanned(
                    ident,
                    format!(
                    "unknown option `{other}`: expected num_cpus, num_gpus, memory, max_retries, \
                     retry_exceptions, num_returns or streaming"
                ),
                ))
            }
        }
    }
    Ok(out)
}

/// Makes a type an actor. Put it on the struct and on its `impl` block:
///
/// - `new(..) -> Self` (or `-> Result<Self, E>`) is the constructor: `Type::remote(args)`
///   creates the actor and returns an `ActorHandle<Type>` at once; `Type::options()` sets
///   name, namespace, concurrency, restarts, lifetime and resources.
/// - Every `pub fn` taking `&self` or `&mut self` becomes a remote method: `handle.method(args)`
///   returns an `ObjectRef`. `Err` of a method returning `Result` becomes a task error.
/// - `pub async fn` methods make it an async actor: calls run concurrently on its runtime.
///   They take `&self` (state that changes goes in fields that lock briefly): an async
///   `&mut self` method would hold the actor across every `.await`, so it is refused.
/// - Concurrency groups (Ray's `concurrency_groups`): `#[ray::actor(concurrency_groups(io =
///   2, compute = 4))]` on the impl block, and `#[ray::method(concurrency_group = "io")]` on
///   a method. A group's calls run on its own threads (in an async actor: at most that many
///   at once), apart from the other groups and from the default one.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_tokens: Tokens = item.clone().into();
    let attr = Tokens::from(attr);
    let result = if let Ok(imp) = syn::parse2::<syn::ItemImpl>(item_tokens.clone()) {
        parse_groups(attr).and_then(|groups| expand_actor_impl(imp, groups))
    } else if !attr.is_empty() {
        Err(syn::Error::new_spanned(
            attr,
            "#[ray::actor] on the struct takes no arguments: concurrency groups go on the impl \
             block, other options on Type::options()",
        ))
    } else if syn::parse2::<syn::ItemStruct>(item_tokens.clone()).is_ok() {
        Ok(item_tokens.clone())
    } else {
        Err(syn::Error::new_spanned(
            &item_tokens,
            "#[ray::actor] goes on a struct and on its impl block",
        ))
    };
    // On an error the item is kept, without the `#[ray::method]`s this macro reads (they
    // would each add an error of their own).
    let fallback = match syn::parse2::<syn::ItemImpl>(item_tokens.clone()) {
        Ok(mut imp) => {
            for item in &mut imp.items {
                if let syn::ImplItem::Fn(f) = item {
                    f.attrs.retain(|a| !is_method_attr(a));
                }
            }
            quote!(#imp)
        }
        Err(_) => item_tokens,
    };
    or_error(fallback, result)
}

/// `#[ray::method(..)]` (or `#[method(..)]` with it imported).
fn is_method_attr(a: &syn::Attribute) -> bool {
    let segs: Vec<String> = a
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    segs == ["ray", "method"] || segs == ["method"]
}

/// `concurrency_groups(io = 2, compute = 4)` on an actor's impl block: each group's name
/// and its number of threads (or, in an async actor, of calls at once).
fn parse_groups(attr: Tokens) -> syn::Result<Vec<(syn::Ident, u32)>> {
    if attr.is_empty() {
        return Ok(Vec::new());
    }
    let meta: Meta = syn::parse2(attr)?;
    let list =
        match &meta {
            Meta::List(l) if l.path.is_ident("concurrency_groups") => l,
            other => return Err(syn::Error::new_spanned(
                other,
                "#[ray::actor] on an impl block takes `concurrency_groups(name = threads, ..)` \
                 only: other options go on Type::options()",
            )),
        };
    let pairs =
        list.parse_args_with(Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated)?;
    let mut out: Vec<(syn::Ident, u32)> = Vec::new();
    for nv in pairs {
        let Some(name) = nv.path.get_ident().cloned() else {
            return Err(syn::Error::new_spanned(nv.path, "expected a group name"));
        };
        let n = match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(n),
                ..
            }) => n.base10_parse::<u32>()?,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "a concurrency group takes a number of threads",
                ))
            }
        };
        if n == 0 {
            return Err(syn::Error::new_spanned(
                &nv.value,
                "a concurrency group needs at least one thread",
            ));
        }
        if out.iter().any(|(g, _)| *g == name) {
            return Err(syn::Error::new_spanned(
                name,
                "this group is declared twice",
            ));
        }
        out.push((name, n));
    }
    Ok(out)
}

/// What `#[ray::method(..)]` says of a method: its concurrency group (one of `groups`) and
/// its number of returns (`Some` when above 1).
#[derive(Default)]
struct MethodOptions {
    group: Option<String>,
    num_returns: Option<(usize, proc_macro2::Span)>,
    retry_exceptions: bool,
}

/// Takes `#[ray::method(concurrency_group = "name", num_returns = n)]` off a method.
fn take_method_options(
    f: &mut syn::ImplItemFn,
    groups: &[(syn::Ident, u32)],
) -> syn::Result<MethodOptions> {
    let Some(i) = f.attrs.iter().position(is_method_attr) else {
        return Ok(MethodOptions::default());
    };
    let attr = f.attrs.remove(i);
    let pairs =
        attr.parse_args_with(Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated)?;
    let mut out = MethodOptions::default();
    for nv in pairs {
        if nv.path.is_ident("retry_exceptions") {
            out.retry_exceptions = match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Bool(b),
                    ..
                }) => b.value,
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "retry_exceptions takes true or false",
                    ))
                }
            };
            continue;
        }
        if nv.path.is_ident("num_returns") {
            let key = nv.path.get_ident().cloned().expect("checked: num_returns");
            let mut options = vec![(key, nv.value)];
            out.num_returns = take_num_returns(&mut options)?;
            continue;
        }
        if !nv.path.is_ident("concurrency_group") {
            return Err(syn::Error::new_spanned(
                nv.path,
                "#[ray::method] takes `concurrency_group = \"name\"`, `num_returns = n` and \
                 `retry_exceptions = true`",
            ));
        }
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(name),
            ..
        }) = &nv.value
        else {
            return Err(syn::Error::new_spanned(
                &nv.value,
                "a concurrency group is named by a string",
            ));
        };
        if !groups.iter().any(|(g, _)| *g == name.value()) {
            let declared: Vec<String> = groups.iter().map(|(g, _)| g.to_string()).collect();
            return Err(syn::Error::new_spanned(
                name,
                if declared.is_empty() {
                    format!(
                        "no concurrency group `{}`: declare it on the impl block, \
                         #[ray::actor(concurrency_groups({} = 1))]",
                        name.value(),
                        name.value()
                    )
                } else {
                    format!(
                        "no concurrency group `{}`: this actor declares {}",
                        name.value(),
                        declared.join(", ")
                    )
                },
            ));
        }
        out.group = Some(name.value());
    }
    Ok(out)
}

struct Method {
    name: syn::Ident,
    /// Its concurrency group (`None`: the default one).
    group: Option<String>,
    /// The types of its returns, when `num_returns` is above 1.
    returns: Option<Vec<Type>>,
    /// Sent again (within the actor's `max_task_retries`) when it fails.
    retry_exceptions: bool,
    /// A generator method's item type (`-> impl Iterator<Item = T>`).
    stream: Option<Type>,
    mutable: bool,
    is_async: bool,
    arg_types: Vec<Type>,
    ret: Type,
    is_result: bool,
}

/// Rewrites `Self` (and `Self::X`) to the actor's type name: generated code lives in other
/// impl blocks, where `Self` means something else.
struct ReplaceSelf<'a>(&'a syn::Ident);

impl syn::visit_mut::VisitMut for ReplaceSelf<'_> {
    fn visit_type_path_mut(&mut self, tp: &mut syn::TypePath) {
        if tp.qself.is_none() {
            if let Some(first) = tp.path.segments.first_mut() {
                if first.ident == "Self" {
                    first.ident = self.0.clone();
                }
            }
        }
        syn::visit_mut::visit_type_path_mut(self, tp);
    }
}

fn without_self(ty: &Type, name: &syn::Ident) -> Type {
    let mut ty = ty.clone();
    syn::visit_mut::VisitMut::visit_type_mut(&mut ReplaceSelf(name), &mut ty);
    ty
}

fn typed_args(sig: &syn::Signature) -> syn::Result<Vec<Type>> {
    let mut out = Vec::new();
    for input in &sig.inputs {
        if let FnArg::Typed(pt) = input {
            if let Type::Reference(r) = &*pt.ty {
                return Err(syn::Error::new_spanned(
                    r,
                    "actor methods take their arguments by value (they cross processes)",
                ));
            }
            out.push((*pt.ty).clone());
        }
    }
    Ok(out)
}

fn expand_actor_impl(
    mut imp: syn::ItemImpl,
    groups: Vec<(syn::Ident, u32)>,
) -> syn::Result<Tokens> {
    // Each method's options, its attribute taken off (the compiler never sees it).
    let mut method_options: Vec<(syn::Ident, MethodOptions)> = Vec::new();
    for item in &mut imp.items {
        if let syn::ImplItem::Fn(f) = item {
            let options = take_method_options(f, &groups)?;
            method_options.push((f.sig.ident.clone(), options));
        }
    }
    if imp.trait_.is_some() || !imp.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "#[ray::actor] goes on the type's own (non-generic) impl block",
        ));
    }
    let Type::Path(self_path) = &*imp.self_ty else {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "expected a type name",
        ));
    };
    let ty = self_path
        .path
        .segments
        .last()
        .map(|s| s.ident.clone())
        .ok_or_else(|| syn::Error::new_spanned(&imp.self_ty, "expected a type name"))?;
    let mut ctor: Option<(Vec<Type>, bool)> = None;
    let mut methods = Vec::new();
    for item in &imp.items {
        let syn::ImplItem::Fn(f) = item else { continue };
        let sig = &f.sig;
        let receiver = sig.inputs.iter().find_map(|i| match i {
            FnArg::Receiver(r) => Some(r.clone()),
            _ => None,
        });
        if sig.ident == "new" && receiver.is_none() {
            let is_result =
                matches!(&sig.output, ReturnType::Type(_, t) if result_ok_type(t).is_some());
            let args = typed_args(sig)?
                .iter()
                .map(|t| without_self(t, &ty))
                .collect();
            ctor = Some((args, is_result));
            continue;
        }
        if !matches!(f.vis, syn::Visibility::Public(_)) {
            continue;
        }
        let Some(r) = receiver else { continue };
        if sig.ident == "remote" || sig.ident == "options" {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                format!(
                    "an actor method cannot be named `{}`: `{ty}::{}` creates the actor",
                    sig.ident, sig.ident
                ),
            ));
        }
        if sig.ident == "kill" {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "an actor method cannot be named `kill`: `handle.kill(no_restart)` kills the actor",
            ));
        }
        if r.reference.is_none() {
            return Err(syn::Error::new_spanned(
                r,
                "actor methods take &self or &mut self: the actor keeps its state",
            ));
        }
        if !sig.generics.params.is_empty() {
            return Err(syn::Error::new_spanned(
                &sig.generics,
                "actor methods cannot be generic",
            ));
        }
        if sig.asyncness.is_some() && r.mutability.is_some() {
            // It would hold the actor's state across every `.await`: a method that loops
            // forever (Ray's usual pattern) would keep every other call waiting, silently.
            return Err(syn::Error::new_spanned(
                r,
                "an async actor method cannot take `&mut self`: it would hold the actor across \
                 every `.await`, and its other calls would wait for it. Take `&self` and keep \
                 what changes in fields that lock briefly (a `std::sync::Mutex`, atomics, or a \
                 `tokio::sync::Mutex` not held across long awaits)",
            ));
        }
        let (ret, is_result) = match &sig.output {
            ReturnType::Default => (syn::parse_quote!(()), false),
            ReturnType::Type(_, t) => match result_ok_type(t) {
                Some(ok) => (ok, true),
                None => ((**t).clone(), false),
            },
        };
        let options = method_options
            .iter()
            .find(|(m, _)| *m == sig.ident)
            .map(|(_, o)| o);
        let returns = match options.and_then(|o| o.num_returns) {
            Some((n, span)) => Some(
                return_types(&ret, n, span)?
                    .iter()
                    .map(|t| without_self(t, &ty))
                    .collect(),
            ),
            None => None,
        };
        let stream = iterator_item(&ret).map(|t| without_self(&t, &ty));
        if stream.is_some() {
            if let Some((_, span)) = options.and_then(|o| o.num_returns) {
                return Err(syn::Error::new(
                    span,
                    "a generator method gives one ref per item: it has no num_returns",
                ));
            }
            if options.is_some_and(|o| o.retry_exceptions) {
                return Err(syn::Error::new_spanned(
                    &sig.output,
                    "a generator method is not retried on its errors (retry_exceptions): \
                     its items may have been taken already",
                ));
            }
        }
        methods.push(Method {
            stream,
            retry_exceptions: options.is_some_and(|o| o.retry_exceptions),
            group: options.and_then(|o| o.group.clone()),
            returns,
            name: sig.ident.clone(),
            mutable: r.mutability.is_some(),
            is_async: sig.asyncness.is_some(),
            arg_types: typed_args(sig)?
                .iter()
                .map(|t| without_self(t, &ty))
                .collect(),
            ret: without_self(&ret, &ty),
            is_result,
        });
    }
    let Some((ctor_args, ctor_is_result)) = ctor else {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "an actor needs a constructor: `pub fn new(..) -> Self`",
        ));
    };
    let is_async = methods.iter().any(|m| m.is_async);
    let group_names: Vec<String> = groups.iter().map(|(g, _)| g.to_string()).collect();
    let group_sizes: Vec<u32> = groups.iter().map(|(_, n)| *n).collect();
    let grouped: Vec<(String, String)> = methods
        .iter()
        .filter_map(|m| m.group.clone().map(|g| (m.name.to_string(), g)))
        .collect();
    let grouped_methods = grouped.iter().map(|(m, _)| m);
    let grouped_groups = grouped.iter().map(|(_, g)| g);
    let client = format_ident!("__RayActorClient{}", ty);
    let options = format_ident!("__RayActorOptions{}", ty);
    let instance = format_ident!("__RayActorInstance{}", ty);
    let construct = format_ident!("__ray_actor_construct_{}", ty);
    let entry = format_ident!("__RAY_ACTOR_CLASS_{}", ty);
    let cparams: Vec<_> = (0..ctor_args.len())
        .map(|i| format_ident!("arg{}", i))
        .collect();
    let new_call = if ctor_is_result {
        quote!(#ty::new(#(#cparams),*).map_err(|e| ::ray::__private::TaskFailure::Returned(e.to_string()))?)
    } else {
        quote!(#ty::new(#(#cparams),*))
    };

    let client_methods = methods.iter().map(|m| {
        let name = &m.name;
        let ret = &m.ret;
        let types = &m.arg_types;
        let params: Vec<_> = (0..types.len()).map(|i| format_ident!("arg{}", i)).collect();
        let doc = format!("Calls `{ty}::{name}` on the actor; returns at once.");
        let retry = m.retry_exceptions;
        if let Some(item) = &m.stream {
            return quote! {
                #[doc = #doc]
                pub fn #name(&self, #( #params: impl ::core::convert::Into<::ray::Arg<#types>> ),*) -> ::ray::ObjectRefGenerator<#item> {
                    ::ray::__private::call_actor_streaming(
                        ::ray::__private::ActorClient::core(self),
                        ::core::stringify!(#name),
                        ::std::vec![ #( ::ray::__private::arg::<#types>(#params.into()) ),* ],
                    )
                }
            };
        }
        if let Some(returns) = &m.returns {
            let n = returns.len() as u32;
            let takes = returns.iter().map(|_| quote!(__refs.next()));
            return quote! {
                #[doc = #doc]
                pub fn #name(&self, #( #params: impl ::core::convert::Into<::ray::Arg<#types>> ),*) -> ( #( ::ray::ObjectRef<#returns>, )* ) {
                    let mut __refs = ::ray::__private::call_actor_returns(
                        ::ray::__private::ActorClient::core(self),
                        ::core::stringify!(#name),
                        ::std::vec![ #( ::ray::__private::arg::<#types>(#params.into()) ),* ],
                        #n,
                        #retry,
                    );
                    ( #( #takes, )* )
                }
            };
        }
        if retry {
            return quote! {
                #[doc = #doc]
                pub fn #name(&self, #( #params: impl ::core::convert::Into<::ray::Arg<#types>> ),*) -> ::ray::ObjectRef<#ret> {
                    ::ray::__private::call_actor_returns(
                        ::ray::__private::ActorClient::core(self),
                        ::core::stringify!(#name),
                        ::std::vec![ #( ::ray::__private::arg::<#types>(#params.into()) ),* ],
                        1,
                        true,
                    )
                    .next()
                }
            };
        }
        quote! {
            #[doc = #doc]
            pub fn #name(&self, #( #params: impl ::core::convert::Into<::ray::Arg<#types>> ),*) -> ::ray::ObjectRef<#ret> {
                ::ray::__private::call_actor(
                    ::ray::__private::ActorClient::core(self),
                    ::core::stringify!(#name),
                    ::std::vec![ #( ::ray::__private::arg::<#types>(#params.into()) ),* ],
                )
            }
        }
    });

    let arms = methods.iter().map(|m| {
        let name = &m.name;
        let types = &m.arg_types;
        let params: Vec<_> = (0..types.len()).map(|i| format_ident!("arg{}", i)).collect();
        let failure = task_failure(quote!(e));
        let unwrap_result = m.is_result.then(|| {
            quote! {
                let __value = match __value {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(e) => return ::core::result::Result::Err(#failure),
                };
            }
        });
        let encode = if m.stream.is_some() {
            quote! {
                (|| {
                    #unwrap_result
                    for __item in __value {
                        ::ray::__private::yield_item(&__item)?;
                    }
                    ::ray::__private::encode_return(&())
                })()
            }
        } else if let Some(returns) = &m.returns {
            let parts: Vec<_> = (0..returns.len()).map(|i| format_ident!("__r{}", i)).collect();
            let unwrap = m.is_result.then(|| {
                quote! {
                    let __value = match __value {
                        ::core::result::Result::Ok(v) => v,
                        ::core::result::Result::Err(e) => return ::core::result::Result::Err(#failure),
                    };
                }
            });
            quote! {
                (|| {
                    #unwrap
                    let (#(#parts,)*) = __value;
                    ::core::result::Result::Ok(::ray::__private::join_returns(&[
                        #( ::ray::__private::encode_return(&#parts)? ),*
                    ]))
                })()
            }
        } else if m.is_result {
            quote! {
                match __value {
                    ::core::result::Result::Ok(v) => ::ray::__private::encode_return(&v),
                    ::core::result::Result::Err(e) => ::core::result::Result::Err(#failure),
                }
            }
        } else {
            quote!(::ray::__private::encode_return(&__value))
        };
        let lock_async = if m.mutable { quote!(__state.write().await) } else { quote!(__state.read().await) };
        let lock_blocking = if m.mutable { quote!(self.0.blocking_write()) } else { quote!(self.0.blocking_read()) };
        let call_async = if m.is_async {
            quote!(__guard.#name(#(#params),*).await)
        } else {
            quote!(__guard.#name(#(#params),*))
        };
        let body = if is_async {
            quote! {
                let __state = self.0.clone();
                ::core::result::Result::Ok(::ray::__private::MethodCall::Future(::std::boxed::Box::pin(async move {
                    #[allow(unused_mut)]
                    let mut __guard = #lock_async;
                    let __value = #call_async;
                    #encode
                })))
            }
        } else {
            quote! {
                #[allow(unused_mut)]
                let mut __guard = #lock_blocking;
                let __value = __guard.#name(#(#params),*);
                ::core::result::Result::Ok(::ray::__private::MethodCall::Done(#encode))
            }
        };
        quote! {
            ::core::stringify!(#name) => {
                #( let #params: #types = __args.next_arg()?; )*
                __args.finish()?;
                #body
            }
        }
    });

    Ok(quote! {
        #imp

        #[doc(hidden)]
        #[derive(Clone)]
        pub struct #client(::ray::__private::ActorCore);

        impl ::ray::__private::ActorClient for #client {
            fn from_core(core: ::ray::__private::ActorCore) -> Self { #client(core) }
            fn core(&self) -> &::ray::__private::ActorCore { &self.0 }
        }

        impl #client {
            #(#client_methods)*
        }

        impl ::ray::ActorClass for #ty {
            type Client = #client;
            const CLASS: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ty));
        }

        /// Options for creating this actor; finish with `.remote(..)`.
        #[doc(hidden)]
        pub struct #options(::ray::ActorOptions);

        impl #options {
            /// A name, unique in its namespace.
            pub fn name(self, name: impl ::core::convert::Into<::std::string::String>) -> Self { #options(self.0.name(name)) }
            /// The namespace of the name.
            pub fn namespace(self, ns: impl ::core::convert::Into<::std::string::String>) -> Self { #options(self.0.namespace(ns)) }
            /// Calls run on this many threads (or concurrently, for async actors).
            pub fn max_concurrency(self, n: u32) -> Self { #options(self.0.max_concurrency(n)) }
            /// Restarts after its process dies (-1: forever).
            pub fn max_restarts(self, n: i32) -> Self { #options(self.0.max_restarts(n)) }
            /// Resends of in-flight calls after a restart (-1: forever).
            pub fn max_task_retries(self, n: i32) -> Self { #options(self.0.max_task_retries(n)) }
            /// Outlives its creator.
            pub fn lifetime_detached(self) -> Self { #options(self.0.lifetime_detached()) }
            /// CPUs held while alive.
            pub fn num_cpus(self, n: f64) -> Self { #options(self.0.num_cpus(n)) }
            /// GPUs held while alive.
            pub fn num_gpus(self, n: f64) -> Self { #options(self.0.num_gpus(n)) }
            /// A custom resource held while alive.
            pub fn resources(self, name: &str, amount: f64) -> Self { #options(self.0.resources(name, amount)) }
            /// Return the existing actor of this name instead of creating one.
            pub fn get_if_exists(self) -> Self { #options(self.0.get_if_exists()) }
            /// Where the GCS may place the actor.
            pub fn scheduling_strategy(self, strategy: ::ray::SchedulingStrategy) -> Self { #options(self.0.scheduling_strategy(strategy)) }
            /// An environment variable of the actor's worker process.
            pub fn env_var(self, name: &str, value: &str) -> Self { #options(self.0.env_var(name, value)) }
            /// Lets it share a worker process with other such actors (see [`::ray::ActorOptions::share_process`]).
            pub fn share_process(self, share: bool) -> Self { #options(self.0.share_process(share)) }
            /// Creates the actor; returns its handle at once. A failure (such as a taken name)
            /// makes every call on the handle fail with it; see `try_remote`.
            pub fn remote(self, #( #cparams: impl ::core::convert::Into<::ray::Arg<#ctor_args>> ),*) -> ::ray::ActorHandle<#ty> {
                ::ray::__private::create_actor::<#ty>(self.0, ::std::vec![ #( ::ray::__private::arg::<#ctor_args>(#cparams.into()) ),* ])
            }
            /// Creates the actor, or says why it could not.
            pub fn try_remote(self, #( #cparams: impl ::core::convert::Into<::ray::Arg<#ctor_args>> ),*) -> ::ray::Result<::ray::ActorHandle<#ty>> {
                ::ray::__private::try_create_actor::<#ty>(self.0, ::std::vec![ #( ::ray::__private::arg::<#ctor_args>(#cparams.into()) ),* ])
            }
        }

        impl #ty {
            /// Creates the actor with default options; returns its handle at once.
            pub fn remote(#( #cparams: impl ::core::convert::Into<::ray::Arg<#ctor_args>> ),*) -> ::ray::ActorHandle<#ty> {
                Self::options().remote(#(#cparams),*)
            }
            /// Options for creating the actor.
            pub fn options() -> #options {
                #options(::ray::ActorOptions::default())
            }
        }

        #[doc(hidden)]
        struct #instance(::std::sync::Arc<::ray::__private::tokio::sync::RwLock<#ty>>);

        impl ::ray::__private::ActorInstance for #instance {
            fn call(
                &self,
                __method: &str,
                __args: &mut ::ray::__private::ArgReader<'_>,
            ) -> ::core::result::Result<::ray::__private::MethodCall, ::ray::__private::TaskFailure> {
                match __method {
                    #(#arms)*
                    other => ::core::result::Result::Err(::ray::__private::TaskFailure::BadArgument(
                        ::std::format!("actor {} has no method {}", ::core::stringify!(#ty), other),
                    )),
                }
            }
        }

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #construct(
            __args: &mut ::ray::__private::ArgReader<'_>,
        ) -> ::core::result::Result<::std::boxed::Box<dyn ::ray::__private::ActorInstance>, ::ray::__private::TaskFailure> {
            #( let #cparams: #ctor_args = __args.next_arg()?; )*
            __args.finish()?;
            let __value = #new_call;
            ::core::result::Result::Ok(::std::boxed::Box::new(#instance(::std::sync::Arc::new(
                ::ray::__private::tokio::sync::RwLock::new(__value),
            ))))
        }

        #[::ray::__private::linkme::distributed_slice(::ray::__private::ACTOR_CLASSES)]
        #[linkme(crate = ::ray::__private::linkme)]
        #[allow(non_upper_case_globals)]
        static #entry: ::ray::__private::ActorClassEntry = ::ray::__private::ActorClassEntry {
            name: <#ty as ::ray::ActorClass>::CLASS,
            construct: #construct,
            is_async: #is_async,
            concurrency_groups: &[ #( (#group_names, #group_sizes) ),* ],
            method_group: {
                fn method_group(method: &str) -> ::core::option::Option<&'static str> {
                    match method {
                        #( #grouped_methods => ::core::option::Option::Some(#grouped_groups), )*
                        _ => ::core::option::Option::None,
                    }
                }
                method_group
            },
        };
    })
}

/// Chooses the concurrency group an actor method's calls run in:
/// `#[ray::method(concurrency_group = "io")]` on a method of an impl block marked
/// `#[ray::actor(concurrency_groups(io = 2))]`, which reads it (a group it does not declare
/// is a compile error). Anywhere else it is an error.
#[proc_macro_attribute]
pub fn method(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let item: Tokens = item.into();
    let err = syn::Error::new_spanned(
        &item,
        "#[ray::method] goes on a method of an impl block marked #[ray::actor]",
    )
    .to_compile_error();
    quote!(#item #err).into()
}

/// Makes `main` a driver, as `#[tokio::main]` makes it async: the body runs between
/// `ray::init(ray::Config::from_env())` and `ray::shutdown()` (which runs even if the body
/// panics). An `async fn main` runs on a tokio runtime made for it. Worker processes (the same
/// binary, started again) never run the body.
///
/// `#[ray::main(config = expr)]` starts from `expr` instead of `Config::from_env()`. If `init`
/// fails, a `main` returning `Result` returns the error (its error type must convert from
/// `ray::Error`); any other `main` (returning nothing, or an `ExitCode`) prints it and exits
/// with status 1.
///
/// ```text
/// #[ray::remote]
/// fn square(x: u64) -> u64 { x * x }
///
/// #[ray::main]
/// fn main() -> ray::Result<()> {
///     let refs: Vec<_> = (0..4).map(square::remote).collect();
///     println!("{:?}", ray::get_all(&refs)?);
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_tokens: Tokens = item.clone().into();
    or_error(item_tokens, expand_main(attr.into(), item.into()))
}

fn expand_main(attr: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let func: ItemFn = syn::parse2(item)?;
    let mut config = quote!(::ray::Config::from_env());
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    for m in metas {
        match m {
            Meta::NameValue(nv) if nv.path.is_ident("config") => {
                let value = nv.value;
                config = quote!(#value);
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "#[ray::main] takes only `config = <a ray::Config>`",
                ))
            }
        }
    }
    let sig = &func.sig;
    if sig.ident != "main" {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "#[ray::main] goes on `fn main`",
        ));
    }
    if !sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "`main` takes no arguments: read them with std::env::args()",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "`main` cannot be generic",
        ));
    }
    let attrs = &func.attrs;
    let vis = &func.vis;
    let body = &func.block;
    let output = &sig.output;
    // A `main` returning `Result` returns init's error; any other (`()`, `ExitCode`, ..)
    // prints it and exits with status 1.
    let returns_result = matches!(output, ReturnType::Type(_, t) if result_ok_type(t).is_some());
    let init = if !returns_result {
        quote! {
            let __ray_session = match ::ray::__private::main_init(#config) {
                ::core::result::Result::Ok(s) => s,
                ::core::result::Result::Err(e) => ::ray::__private::main_init_failed(e),
            };
        }
    } else {
        quote! {
            let __ray_session = ::ray::__private::main_init(#config)?;
        }
    };
    let output_type = match output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    let run = if sig.asyncness.is_some() {
        quote! {
            let __ray_result = ::ray::__private::block_on_main::<#output_type, _>(async move #body);
        }
    } else {
        quote! {
            #[allow(clippy::redundant_closure_call)]
            let __ray_result = (move || #output #body)();
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis fn main() #output {
            #init
            #run
            ::core::mem::drop(__ray_session);
            __ray_result
        }
    })
}

/// Runs a function once in every worker process as it starts, before it takes any work (Ray's
/// `worker_process_setup_hook`): workers never run `main`, so what they need set up
/// (logging, a global) goes here. The function takes nothing and returns nothing; it runs
/// before the worker has joined, so it makes no ray call. If it panics, the worker exits
/// (counted as a worker that could not start).
///
/// ```text
/// #[ray::worker_setup]
/// fn quiet_logs() {
///     std::env::set_var("MY_LIB_LOG", "warn");
/// }
/// ```
#[proc_macro_attribute]
pub fn worker_setup(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_tokens: Tokens = item.clone().into();
    let result = (|| -> syn::Result<Tokens> {
        if !Tokens::from(attr).is_empty() {
            return Err(syn::Error::new_spanned(
                &item_tokens,
                "#[ray::worker_setup] takes no arguments",
            ));
        }
        let func: ItemFn = syn::parse2(item_tokens.clone())?;
        let sig = &func.sig;
        if !sig.inputs.is_empty() || !matches!(sig.output, ReturnType::Default) {
            return Err(syn::Error::new_spanned(
                sig,
                "a worker setup function takes nothing and returns nothing: `fn setup()`",
            ));
        }
        if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
            return Err(syn::Error::new_spanned(
                sig,
                "a worker setup function is a plain `fn setup()` (not async, not generic)",
            ));
        }
        let name = &sig.ident;
        Ok(quote! {
            #func

            const _: () = {
                #[::ray::__private::linkme::distributed_slice(::ray::__private::WORKER_SETUP)]
                #[linkme(crate = ::ray::__private::linkme)]
                static SETUP: ::ray::__private::WorkerSetup = ::ray::__private::WorkerSetup {
                    name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                    run: #name,
                };
            };
        })
    })();
    or_error(item_tokens, result)
}
