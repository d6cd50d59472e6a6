//! Repository hygiene checked as a test: every Rust source file opens with a `//!` doc saying
//! what it holds, and no stub macros or skipped tests are committed.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if !name.starts_with('.') && !name.starts_with("target") {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_source_file_has_a_module_doc_and_no_stubs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut problems = Vec::new();
    let stub = ["todo", "!("].concat();
    let unimpl = ["unimplemented", "!("].concat();
    let ignore = ["#[", "ignore"].concat();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        if !text.starts_with("//!") {
            problems.push(format!("{rel}: no //! module doc on the first line"));
        }
        for bad in [&stub, &unimpl, &ignore] {
            if text.contains(bad.as_str()) {
                problems.push(format!("{rel}: contains {bad}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every call between processes goes through `ray_common::rpc`'s client traits (the seam
/// fault filters and fakes plug into), and no library decides a retry from a gRPC code.
#[test]
fn only_ray_common_opens_rpc_clients_or_reads_status_codes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "ray-core/src",
        "ray-gcs/src",
        "ray-raylet/src",
        "ray-dashboard/src",
        "rayrs/src",
        "src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {} files", files.len());
    let client = ["_client", "::"].concat();
    let code = [".code", "()"].concat();
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        for bad in [&client, &code] {
            if text.contains(bad.as_str()) {
                problems.push(format!("{rel}: contains {bad}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The modules of `ray-core` that make up the facade: the public API and the process-global
/// state (the current core worker, the session, the worker-mode constructor). The link-time
/// registry (`registry`) may hold statics too; nothing else may.
const FACADE: [&str; 13] = [
    "lib",
    "logging",
    "generator",
    "actor_handle",
    "actor_pool",
    "placement_group",
    "queue",
    "current",
    "head",
    "object_ref",
    "state",
    "util",
    "worker",
];

/// `ray-core`'s modules (a directory is one module) with the text of their code, comments
/// left out.
fn ray_core_modules(root: &Path) -> std::collections::BTreeMap<String, String> {
    let src = root.join("ray-core/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = std::collections::BTreeMap::<String, String>::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let name = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let code: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        let entry = modules.entry(name).or_default();
        entry.push_str(&code.join("\n"));
        entry.push('\n');
    }
    modules
}

/// The `crate::x` paths in `code` (grouped ones too: `crate::{x, y::z}`) that name one of
/// `modules`.
fn imports<'a>(code: &str, modules: &'a [String]) -> std::collections::BTreeSet<&'a str> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut named = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            named.push(ident(rest));
            continue;
        };
        // Each top-level item of the group starts with a module's name.
        let mut depth = 0;
        let mut start = 0;
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    named.push(ident(&group[start..j]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    named.push(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    named
        .iter()
        .filter_map(|n| modules.iter().find(|m| *m == n))
        .map(|m| m.as_str())
        .collect()
}

#[test]
fn the_layering_check_sees_grouped_imports() {
    let modules: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let code = "use crate::{a, b::{X, Y}, c::Z};\nuse crate::d::W;\n";
    let found: Vec<&str> = imports(code, &modules).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d"]);
}

/// The core worker's modules import one another one way (no circle), the layers below the
/// facade never reach up into it, and only the facade reads the current core worker or
/// holds a static: several core workers can live in one process.
#[test]
fn ray_core_is_layered_and_only_its_facade_holds_globals() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = ray_core_modules(root);
    assert!(modules.len() > 15, "found only {} modules", modules.len());
    let names: Vec<String> = modules.keys().cloned().collect();
    let graph: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = modules
        .iter()
        .map(|(m, code)| {
            let mut deps = imports(code, &names);
            deps.remove(m.as_str());
            (m.as_str(), deps)
        })
        .collect();
    let mut problems = Vec::new();

    // A circle shows up as an edge back to a module still on the search path.
    fn visit<'a>(
        m: &'a str,
        graph: &std::collections::BTreeMap<&'a str, std::collections::BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
        circles: &mut Vec<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m);
            circles.push(format!("import circle: {}", circle.join(" -> ")));
            return;
        }
        path.push(m);
        for d in &graph[m] {
            visit(d, graph, path, done, circles);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = std::collections::BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut problems);
    }

    let current = ["current", "::"].concat();
    let lib = std::fs::read_to_string(root.join("ray-core/src/lib.rs")).unwrap();
    for (m, code) in &modules {
        // Test-only modules (the in-process cluster and its tests) are no part of a program.
        let test_only = lib.contains(&format!("#[cfg(test)]\nmod {m};"));
        if FACADE.contains(&m.as_str()) || test_only {
            continue;
        }
        for up in graph[m.as_str()].iter().filter(|d| FACADE.contains(d)) {
            problems.push(format!("{m}: imports the facade module {up}"));
        }
        // The crate root's functions are the facade too (`crate::put` reads the current core
        // worker); its re-exported types (`crate::Error`) are not.
        for (i, _) in code.match_indices("crate::") {
            let ident: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let lower = ident.starts_with(|c: char| c.is_ascii_lowercase());
            if lower && !names.contains(&ident) {
                problems.push(format!("{m}: calls the crate root's crate::{ident}"));
            }
        }
        if code.contains(current.as_str()) {
            problems.push(format!("{m}: reads the current core worker"));
        }
        if m == "registry" {
            continue; // The link-time registry.
        }
        // Statics outside `thread_local!` (call-scoped context, set and restored by callers).
        let mut depth = 0i32;
        let mut in_thread_local = false;
        for line in code.lines() {
            if line.contains("thread_local!") {
                in_thread_local = true;
                depth = 0;
            }
            if in_thread_local {
                depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
                if depth <= 0 && line.contains('}') {
                    in_thread_local = false;
                }
                continue;
            }
            let t = line.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub "))
                .unwrap_or(t);
            if t.starts_with("static ") {
                problems.push(format!("{m}: holds a static: {}", line.trim()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
