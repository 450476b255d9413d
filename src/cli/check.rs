//! `graphguard check DIR`: load and validate a policy directory; errors print as
//! `file:line: key: message`, warnings as `warning: ...`.

use std::process::ExitCode;

use crate::policy::Policy;

/// `graphguard check DIR`: load and validate a policy directory.
pub(super) fn check(dir: &std::path::Path) -> ExitCode {
    match Policy::load_dir(dir) {
        Ok(p) => {
            for w in &p.warnings {
                say!("warning: {w}");
            }
            let n = p.authenticators.len();
            say!(
                "ok: policy version {} ({n} authenticator{})",
                p.version,
                if n == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                say!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
