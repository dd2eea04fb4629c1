//! What an entry of an in-memory cache weighs.
//!
//! Every cache here is bounded by the bytes it holds, not by how many
//! entries: traffic is mostly people seen once, and a bound by count would
//! let their number decide the process's size. A weigher must therefore
//! count what an entry really costs, beyond the bytes of its key and value:
//! moka's bookkeeping and the allocator's rounding. `tests/cache_memory.rs`
//! checks the sum against a counting allocator.

/// Bytes moka keeps per entry beside the key and value: its hash-table slot,
/// access-order and timer nodes and the entry's metadata.
const ENTRY_OVERHEAD: usize = 400;

/// The weight of an entry whose key and value own `owned` bytes (their
/// inline sizes and their heap capacities): plus one seventh for the
/// allocator rounding small allocations up to their size classes, plus
/// moka's overhead.
pub fn weight(owned: usize) -> u32 {
    let bytes = owned + owned / 7 + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}
