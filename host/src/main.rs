//! The `belfry` binary: see [`belfry::cli`].

belfry::daemon_allocator!();

fn main() -> std::process::ExitCode {
    belfry::cli::main()
}
