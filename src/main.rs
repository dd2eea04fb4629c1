//! The `candor` binary: parses the command line and hands over to the library.

/// Under steady load glibc's per-thread arenas let the resident size creep;
/// mimalloc, which returns freed pages to the system, halved that growth in
/// the soak (RELIABILITY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    candor::cli::main()
}
