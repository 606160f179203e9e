//! Allocator tuning for the binaries: mimalloc returns freed memory at once and commits arena memory only as used.
//!
//! Without it, the ingest path's transient peaks (request bodies, decoded records,
//! notifications) stay resident: docs/BENCHMARKS.md measured 235 MiB at 100K alerts with
//! mimalloc's defaults and 107 MiB with these, at the same throughput. The options must be set
//! before mimalloc reserves its first arena, which happens before `main`, so the binaries set
//! them from a constructor ([`crate::tune_allocator!`]). An operator's `MIMALLOC_*` variables
//! still win.

/// mimalloc v3's `mi_option_arena_eager_commit` and `mi_option_purge_delay`: their positions in
/// `enum mi_option_e` of the vendored `mimalloc.h` (libmimalloc-sys names only older options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Set the options, unless the environment sets them. Called from a constructor: it must not
/// allocate, so it reads the environment with libc's `getenv`.
pub extern "C" fn tune() {
    for (variable, option) in
        [(c"MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY), (c"MIMALLOC_ARENA_EAGER_COMMIT", MI_OPTION_ARENA_EAGER_COMMIT)]
    {
        // SAFETY: getenv with a NUL-terminated name; a setter of one of mimalloc's global
        // options; both before any thread exists.
        unsafe {
            if getenv(variable.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, 0);
            }
        }
    }
}

unsafe extern "C" {
    fn getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
}

/// Run [`tune`] before `main` (and before the runtime's first allocation): put it in the
/// binary's root module next to its `#[global_allocator]`.
#[macro_export]
macro_rules! tune_allocator {
    () => {
        // ELF's constructor section (Linux); elsewhere mimalloc keeps its defaults.
        #[cfg(target_os = "linux")]
        #[used]
        #[unsafe(link_section = ".init_array")]
        static TUNE_ALLOCATOR: extern "C" fn() = $crate::alloc::tune;
    };
}
