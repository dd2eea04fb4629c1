//! The `candor` binary: parses the command line and hands over to the library.

/// Under steady load glibc's per-thread arenas let the resident size creep;
/// mimalloc, which returns freed pages to the system, halved that growth in
/// the soak (RELIABILITY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // mimalloc advises its arena for transparent huge pages, so khugepaged,
    // which sweeps a 1 GiB arena about every eleven minutes, refills as 2 MiB
    // pages the memory mimalloc had returned: the soak's resident size stepped
    // up at each sweep, with stalls of up to a third of a second
    // (RELIABILITY.md). Best effort: a kernel that refuses only costs memory.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    candor::cli::main()
}
