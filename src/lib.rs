//! graphguard: an authorization gateway for LangGraph agent servers.
//!
//! # The request path
//!
//! One request goes through these phases, in this order
//! ([`gateway::pipeline`](crate::gateway) runs them):
//!
//! 1. **authenticate** ([`authn`]): the first authenticator that recognises the request's
//!    credential (API key, JWT, an external service, or an anonymous identity) turns it into a
//!    [`user::User`], or refuses it with a typed [`error::AuthFailure`];
//! 2. **classify** ([`routes`]): the path and method against the agent server's route table;
//!    public and blocked routes are admitted or refused here, before authentication
//!    ([`routes::admission`]);
//! 3. **decide** ([`decide`], pure: no I/O): the compiled [`policy::Policy`] (handlers, roles
//!    and access policies) decides the route, asking the gateway for each resource it must
//!    look up;
//! 4. **rewrite** ([`body`]): the decision's edits (stamped metadata, narrowed filters,
//!    scrubbed configuration) are spliced into the request body without re-serializing it;
//! 5. **forward** ([`gateway`]): the request goes upstream with the user's headers, hop-by-hop
//!    and spoofable headers removed;
//! 6. **stream back** ([`gateway`]): the answer streams back, filtered when the decision says
//!    so (searches the gateway completes itself).
//!
//! Around it: [`ops`] (admin listener, reload, the management API, metrics, audit log,
//! explanations), [`cli`] (`serve`, `check`, `test`, `explain`), and the backends a fleet
//! shares: the policy [`store`] (a state directory or PostgreSQL) and the [`limits`] counters
//! (in-process or Redis).
//!
//! # Dependency order
//!
//! A module imports from its own folder and the ones before it:
//!
//! shared ([`error`], [`event`], [`user`], [`ids`], [`clock`]) < [`body`] < [`authn`] <
//! [`routes`] < [`policy`] < [`decide`] < the backends ([`store`], [`limits`]) < [`gateway`]
//! < [`ops`] < [`cli`].
//!
//! One documented exception: the gateway records into [`ops::metrics`] and [`ops::audit`],
//! which are sinks (they read what the gateway hands them and call nothing back). The test
//! `layering` below checks the order.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod authn;
pub mod body;
pub mod cli;
pub mod clock;
pub mod decide;
pub mod error;
pub mod event;
pub mod gateway;
pub mod ids;
pub mod limits;
pub mod ops;
pub mod policy;
pub mod routes;
pub mod store;
pub mod user;

#[cfg(test)]
mod layering {
    //! No import cycle between top-level modules, except the documented ones.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Imports against the dependency order, each documented in the crate doc.
    const EXCEPTIONS: &[(&str, &str)] = &[("gateway", "ops")];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Each top-level module and the top-level modules its files name as `crate::<module>`.
    fn references() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(&src).unwrap().flatten() {
            let p = entry.path();
            let module = p.file_stem().unwrap().to_string_lossy().to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let mut files = vec![p.clone()];
            if p.is_dir() {
                files.clear();
                rust_files(&p, &mut files);
            }
            let named = refs.entry(module.clone()).or_default();
            for f in files {
                let text = std::fs::read_to_string(f).unwrap();
                for (i, _) in text.match_indices("crate::") {
                    let rest = &text[i + "crate::".len()..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    if end > 0 && rest[..end] != module {
                        named.insert(rest[..end].to_string());
                    }
                }
            }
        }
        let modules: BTreeSet<String> = refs.keys().cloned().collect();
        for named in refs.values_mut() {
            named.retain(|m| modules.contains(m));
        }
        refs
    }

    #[test]
    fn top_level_modules_form_no_cycle_but_the_documented_ones() {
        let mut refs = references();
        for (from, to) in EXCEPTIONS {
            assert!(refs[*from].contains(*to), "stale exception {from} -> {to}");
            refs.get_mut(*from).unwrap().remove(*to);
        }
        // Peel off modules that import nothing left; whatever remains is a cycle.
        while let Some(leaf) = refs
            .iter()
            .find(|(_, to)| to.is_empty())
            .map(|(m, _)| m.clone())
        {
            refs.remove(&leaf);
            for to in refs.values_mut() {
                to.remove(&leaf);
            }
        }
        assert!(refs.is_empty(), "import cycle among {refs:?}");
    }
}
