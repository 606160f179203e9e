//! The `belfry` binary: see [`belfry::cli`].

fn main() -> std::process::ExitCode {
    belfry::cli::main()
}
