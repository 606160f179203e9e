//! The `belfry` binary: see [`belfry::cli`].

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    belfry::cli::main()
}
