//! The `graphguard` command (see [`graphguard::cli`]).

fn main() -> std::process::ExitCode {
    graphguard::cli::main()
}
