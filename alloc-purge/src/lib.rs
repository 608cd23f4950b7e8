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
//! It is also the broker's global allocator ([`Allocator`]): mimalloc,
//! with the blocks an idle connection keeps in a heap of their own
//! ([`long_lived`]).
//!
//! The workspace forbids `unsafe`; this crate holds its exceptions: the
//! FFI calls to mimalloc and the `GlobalAlloc` that forwards to it.

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

/// The broker's global allocator: mimalloc, with what [`long_lived`]
/// allocates kept apart, in a heap of its own.
///
/// An idle connection holds a few small blocks for as long as it lives
/// (its session handle, its bed while it sleeps, its subscription's trie
/// node) among many more its setup frees (its actor, buffers, the packets
/// it sent). Allocated among those, each long-lived block keeps a page
/// resident that is otherwise free: measured, the resident memory of a
/// sleeping connection was twice what it holds. In a heap of their own
/// they fill pages densely. Freeing and reallocating need no care: mimalloc
/// finds the heap of any block.
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

thread_local! {
    /// Allocations on this thread go to the long-lived heap.
    static LONG_LIVED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The long-lived heap, made on first use.
static LONG_HEAP: std::sync::atomic::AtomicPtr<libmimalloc_sys::mi_heap_t> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

fn long_heap() -> *mut libmimalloc_sys::mi_heap_t {
    use std::sync::atomic::Ordering;
    let heap = LONG_HEAP.load(Ordering::Acquire);
    if !heap.is_null() {
        return heap;
    }
    #[allow(unsafe_code)]
    // SAFETY: `mi_heap_new` takes nothing and returns a new heap or null;
    // mimalloc 3's heaps are first-class: any thread may allocate from them.
    let made = unsafe { libmimalloc_sys::mi_heap_new() };
    if made.is_null() {
        return made;
    }
    match LONG_HEAP.compare_exchange(
        std::ptr::null_mut(),
        made,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => made,
        // Another thread made one first: ours stays empty and unused
        // (deleting it would need no live block in it, which holds, but
        // an empty heap costs nothing resident).
        Err(theirs) => theirs,
    }
}

/// Runs `f` with what it allocates on this thread placed in the
/// long-lived heap ([`Allocator`]): for the blocks an idle connection
/// keeps, not for work that frees what it allocates. Nests.
pub fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LONG_LIVED.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LONG_LIVED.with(|l| l.replace(true)));
    f()
}

/// A block of `layout` from the long-lived heap by `allocate`
/// (`mi_heap_malloc_aligned` or `mi_heap_zalloc_aligned`), if this thread
/// is in [`long_lived`] and the heap exists; else `None`.
#[inline]
fn in_long_heap(
    layout: std::alloc::Layout,
    allocate: unsafe extern "C" fn(
        *mut libmimalloc_sys::mi_heap_t,
        usize,
        usize,
    ) -> *mut std::ffi::c_void,
) -> Option<*mut u8> {
    if !LONG_LIVED.with(std::cell::Cell::get) {
        return None;
    }
    let heap = long_heap();
    if heap.is_null() {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: `heap` is a live heap (never deleted); `allocate` is one of
    // mimalloc's two aligned heap allocations, given the layout's size and
    // alignment (a power of two, as they require).
    Some(unsafe { allocate(heap, layout.size(), layout.align()) }.cast())
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to mimalloc's own `GlobalAlloc` or to
// `mi_heap_malloc_aligned` / `mi_heap_zalloc_aligned` with the layout's
// size and alignment, which return memory of that size and alignment or
// null, as `GlobalAlloc` requires; `dealloc` and `realloc` of a block from
// either heap go to `mi_free` / `mi_realloc`, which find its heap.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        match in_long_heap(layout, libmimalloc_sys::mi_heap_malloc_aligned) {
            Some(block) => block,
            #[allow(unsafe_code)]
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { mimalloc::MiMalloc.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        match in_long_heap(layout, libmimalloc_sys::mi_heap_zalloc_aligned) {
            Some(block) => block,
            #[allow(unsafe_code)]
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        #[allow(unsafe_code)]
        // SAFETY: `ptr` came from `alloc` of either heap, as the caller
        // guarantees; `mi_free` (under `MiMalloc::dealloc`) finds its heap.
        unsafe {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        #[allow(unsafe_code)]
        // SAFETY: as `dealloc`; the new block is in the default heap.
        unsafe {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: Allocator = Allocator;

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

    /// The tests read the process's resident memory: one at a time.
    static RESIDENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// 64 MiB in 1 KiB blocks, freed, stays resident until the purge; the
    /// blocks still in use keep their contents.
    #[test]
    fn purging_returns_freed_pages_and_keeps_live_blocks() {
        let _one = RESIDENT.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Pages resident after keeping one block in 16 of the same size and
    /// freeing the others (then purging), the kept ones allocated with
    /// `keep`.
    // Boxed on purpose: each block is an allocation of its own.
    #[allow(clippy::vec_box)]
    fn resident_after_keeping(keep: impl Fn() -> Box<[u8; 64]>) -> (u64, Vec<Box<[u8; 64]>>) {
        let before = resident_pages();
        let mut kept = Vec::with_capacity(50_000);
        let mut freed = Vec::with_capacity(50_000 * 15);
        for _ in 0..50_000 {
            kept.push(keep());
            for _ in 0..15 {
                freed.push(Box::new([1u8; 64]));
            }
        }
        drop(freed);
        purge_freed();
        (resident_pages().saturating_sub(before), kept)
    }

    /// Blocks kept among many freed ones of their size pin their pages;
    /// allocated `long_lived`, they fill pages of their own: 50,000 kept
    /// 64-byte blocks (3.2 MB) among 750,000 freed ones.
    #[test]
    fn long_lived_blocks_do_not_pin_the_pages_of_freed_ones() {
        let _one = RESIDENT.lock().unwrap_or_else(|e| e.into_inner());
        let (mixed, kept_mixed) = resident_after_keeping(|| Box::new([2u8; 64]));
        let (apart, kept_apart) = resident_after_keeping(|| long_lived(|| Box::new([3u8; 64])));
        assert!(kept_mixed.iter().all(|b| b.iter().all(|&x| x == 2)));
        assert!(kept_apart.iter().all(|b| b.iter().all(|&x| x == 3)));
        let dense = 50_000 * 64 / 4096;
        assert!(
            apart < mixed / 4 && apart < dense * 2,
            "pages resident: {mixed} with the kept blocks among the freed ones, {apart} apart \
             (they need {dense})"
        );
        // `long_lived` ends with its closure.
        let after: Box<[u8; 64]> = Box::new([4u8; 64]);
        assert!(!LONG_LIVED.with(std::cell::Cell::get));
        drop(after);
    }
}
