//! The `belfry` binary: see [`belfry::cli`].

#[global_allocator]
static ALLOCATOR: belfry::alloc::Metered = belfry::alloc::Metered;
belfry::tune_allocator!();

fn main() -> std::process::ExitCode {
    belfry::cli::main()
}
