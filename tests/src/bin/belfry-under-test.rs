//! The `belfry` binary, built inside this package so black-box tests can start it by path
//! (`CARGO_BIN_EXE_belfry-under-test`); its code is exactly `belfry::cli::main`.

fn main() -> std::process::ExitCode {
    belfry::cli::main()
}
