//! Purging what the allocator holds freed.
//!
//! mimalloc (the broker's global allocator) keeps the pages it freed for a
//! while (`purge_delay`, 1 s) and returns them to the OS only when some
//! later allocator work on a thread finds that delay expired: a page free,
//! a thread ending, or every 10,000th slow-path allocation. A broker whose
//! sessions have just hibernated is idle by definition and does none of
//! those, so what their actors used would stay resident. [`purge_freed`]
//! asks for it at once, after a batch of hibernations.
//!
//! The workspace forbids `unsafe`; this crate holds its one exception, an
//! FFI call with no arguments to check.

/// Collects the calling thread's mimalloc heap (pages all of whose blocks
/// were freed, by this thread or others, go back to their arena) and
/// purges every arena's freed pages now, without waiting for the purge
/// delay. Its cost grows with the thread's heap (it visits each of its
/// pages), so call it after a batch of frees, not per free.
pub fn purge_freed() {
    #[allow(unsafe_code)]
    // SAFETY: `mi_collect` takes no pointer and no state of ours; mimalloc
    // documents it as callable from any thread at any time (it acts on the
    // calling thread's own heap, and on the shared arenas under their own
    // locks and atomics). It frees no block still in use.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

    /// Resident pages of this process (`/proc/self/statm`, second field).
    fn resident_pages() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux");
        statm
            .split_whitespace()
            .nth(1)
            .expect("resident")
            .parse()
            .expect("a number")
    }

    /// 64 MiB in 1 KiB blocks, freed, stays resident until the purge; the
    /// blocks still in use keep their contents.
    #[test]
    fn purging_returns_freed_pages_and_keeps_live_blocks() {
        let page = 4096;
        let keep: Vec<Box<[u8; 256]>> = (0..1000u32).map(|i| Box::new([i as u8; 256])).collect();
        let freed: Vec<Box<[u8; 1024]>> = (0..65_536).map(|_| Box::new([7u8; 1024])).collect();
        let before_free = resident_pages();
        drop(freed);
        let freed_resident = resident_pages();
        purge_freed();
        let purged = resident_pages();
        let freed_pages = 64 * 1024 * 1024 / page;
        assert!(
            freed_resident.saturating_sub(purged) >= freed_pages / 2,
            "resident pages: {before_free} holding 64 MiB, {freed_resident} after freeing it, \
             {purged} after the purge"
        );
        for (i, b) in keep.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8));
        }
    }
}
