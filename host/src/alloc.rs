//! The allocator's settings for the binaries, whose global allocator is mimalloc.

use std::ffi::{c_int, c_long};

unsafe extern "C" {
    /// mimalloc's `mi_option_set` (`mimalloc.h`), exported by the library the `mimalloc` crate
    /// links.
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (`mimalloc.h`; the v3 sources that
/// `libmimalloc-sys` 0.1.49, pinned by Cargo.lock, builds): the delay in milliseconds before freed
/// memory goes back to the kernel, -1 for never.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Keeps the memory the process frees for its own reuse instead of returning it to the kernel.
/// The U-Net frees and takes its per-layer buffers (megabytes at 28x28) on every chunk; what
/// mimalloc returned to the kernel came back as fresh pages, faulted in and zeroed: on mnist5k
/// training that was 9% of the time as system time, and with two threads the page faults
/// contend (benches/RESULTS-notes.md, "The allocator"). The peak resident memory is unchanged:
/// the process already held that memory at its peak.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores the option's value; -1 is a valid purge delay.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
