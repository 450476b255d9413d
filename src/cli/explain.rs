//! `graphguard explain`: which handler, roles and access policies decide one action for one
//! user on one resource, with the filter and the effect, in words and as JSON.

use std::process::ExitCode;

use crate::event::Event;
use crate::policy::Policy;

/// `graphguard explain`: one decision for a user, an action and a resource's metadata.
pub(super) fn explain(
    dir: &std::path::Path,
    user: &str,
    action: &str,
    resource: Option<&str>,
) -> ExitCode {
    let policy = match Policy::load_dir(dir) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let user = match serde_json::from_str::<super::test::CaseUser>(user) {
        Ok(u) => u.to_user(),
        Err(e) => {
            eprintln!("graphguard: --user is not a user object: {e}");
            return ExitCode::FAILURE;
        }
    };
    let event = match action.parse::<Event>() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("graphguard: --action: {e}");
            return ExitCode::FAILURE;
        }
    };
    let md = match resource
        .map(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>)
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("graphguard: --resource must be a JSON object of metadata: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ex = crate::ops::explain::explain(&policy, &user, event, md.as_ref());
    for w in &ex.words {
        say!("{w}");
    }
    say!();
    say!("{}", serde_json::to_string_pretty(&ex).unwrap_or_default());
    ExitCode::SUCCESS
}
