//! The `belfry` binary: see [`belfry::cli`].

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
belfry::tune_allocator!();

fn main() -> std::process::ExitCode {
    belfry::cli::main()
}
