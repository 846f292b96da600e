//! The binary's global allocator: mimalloc, called through its C API the way that API is fastest.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every allocation to `mi_malloc_aligned`, whose fast path covers
//! only blocks up to 1 KiB whose free-list head happens to be aligned; anything larger (a request's header maps,
//! read buffers, boxed futures: ~7 a proxied request) takes the generic aligned path at twice the cost of
//! `mi_malloc`'s (bench/analysis.md, session twelve). Every mimalloc block is at least word-aligned (its size
//! classes are whole words), so a layout asking for no more than that gets `mi_malloc` / `mi_zalloc` /
//! `mi_realloc`; only larger alignments go through the aligned entry points. `mi_free` frees both.
//!
//! Owns that choice only. Must not tune mimalloc (`control::tune_allocator` does) nor be used by tests and
//! examples, which run on the system allocator.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has whatever its size: a machine word.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
pub struct Mimalloc;

// SAFETY: each method forwards to the mimalloc function with the same contract (a block of at least `size` bytes,
// aligned to `align`, or null; `mi_free` / `mi_realloc*` on blocks mimalloc returned). Blocks from the unaligned
// entry points are word-aligned, and those are used only when the layout's alignment is at most a word.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class a request's allocations fall in, small and large, with every alignment: the block is
    /// aligned, usable to its last byte, zeroed when asked, and keeps its bytes when it grows or shrinks.
    #[test]
    fn blocks_are_aligned_usable_and_kept_across_realloc() {
        let sizes = [1, 3, 7, 8, 12, 24, 40, 100, 1000, 1025, 4096, 5824, 70_000, 1 << 21];
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in sizes {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is written within its size and freed once.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xA5, size);
                    let grown = Mimalloc.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown: size {size} align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xA5));
                    let shrunk = Mimalloc.realloc(grown, Layout::from_size_align(size * 3, align).unwrap(), size);
                    assert_eq!(shrunk as usize % align, 0, "shrunk: size {size} align {align}");
                    assert!((0..size).all(|i| *shrunk.add(i) == 0xA5));
                    Mimalloc.dealloc(shrunk, layout);

                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
