//! The `belfry` binary, built inside this package so black-box tests can start it by path
//! (`CARGO_BIN_EXE_belfry-under-test`); its code is exactly `belfry::cli::main`.

// The same allocator as the real binary, so benchmarks measure what ships.
belfry::daemon_allocator!();

fn main() -> std::process::ExitCode {
    belfry::cli::main()
}
