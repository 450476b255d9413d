//! The `graphguard` command: `serve`, `check`, `test` and `explain`. `main.rs` only calls
//! [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Print to stdout; a closed pipe (`graphguard explain ... | head`) is not an error.
macro_rules! say {
    () => {{
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), b"\n");
    }};
    ($($arg:tt)*) => {{
        let _ = std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!("{}\n", format_args!($($arg)*)));
    }};
}

mod check;
mod explain;
mod serve;
mod test;

use serve::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "graphguard",
    version,
    about = "Authorization gateway for LangGraph agent servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Load and validate a policy directory; print errors as file:line: key: message.
    Check {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Run a policy set's test cases (user, action or request, expectations).
    Test {
        /// The policy directory.
        dir: PathBuf,
        /// The test files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Explain one decision: handler, roles, access policies, filter, effect.
    Explain {
        /// The policy directory.
        #[arg(long)]
        policies: PathBuf,
        /// The user as JSON: {"identity": ..., "permissions": [...], "roles": [...], "attributes": {...}}.
        #[arg(long)]
        user: String,
        /// The permission, RESOURCE:ACTION (e.g. threads:read).
        #[arg(long)]
        action: String,
        /// The resource's metadata (tags) as JSON, e.g. {"owner": "alice", "Team": "A"}.
        #[arg(long)]
        resource: Option<String>,
    },
}

/// Parse the command line and run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = match &cli.cmd {
        Cmd::Serve(a) => serve::init_logs(&a.log_format, true),
        Cmd::Check { .. } | Cmd::Explain { .. } | Cmd::Test { .. } => {
            serve::init_logs("compact", false)
        }
    };
    match cli.cmd {
        Cmd::Check { dir } => check::check(&dir),
        Cmd::Test { dir, files } => test::test(&dir, &files),
        Cmd::Explain {
            policies,
            user,
            action,
            resource,
        } => explain::explain(&policies, &user, &action, resource.as_deref()),
        Cmd::Serve(args) => match serve::runtime(args.runtime, args.worker_threads) {
            Ok(rt) => {
                // JSON audit lines are written straight into the log sink.
                let sink = logs
                    .as_ref()
                    .map(|g| g.0.clone())
                    .filter(|_| !matches!(args.log_format.as_str(), "pretty" | "compact"));
                rt.block_on(serve::serve(args, sink))
            }
            Err(e) => {
                eprintln!("graphguard: cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
