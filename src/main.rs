//! The `candor` binary: parses the command line and hands over to the library.

/// Under steady load glibc's per-thread arenas let the resident size creep
/// for a quarter of an hour before it settles (RELIABILITY.md, soak);
/// mimalloc keeps it flat by returning freed pages to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    candor::cli::main()
}
