//! Allocator tuning for the binaries: mimalloc commits arena memory only as used, and returns freed memory a second later even when idle.
//!
//! Without it, the ingest path's transient peaks (request bodies, decoded records,
//! notifications) stay resident: docs/BENCHMARKS.md measured 235 MiB at 100K alerts with
//! mimalloc's defaults and 107 MiB with these, at the same throughput. The options must be set
//! before mimalloc reserves its first arena, which happens before `main`, so the binaries set
//! them from a constructor ([`crate::tune_allocator!`]). An operator's `MIMALLOC_*` variables
//! still win.
//!
//! Freed memory goes back to the OS [`PURGE_DELAY_MS`] after it was freed, not at once: under
//! load the same pages are freed and wanted again within milliseconds, and returning them at
//! once cost 8-11 % of the daemon's CPU in page faults (the 20K burst, docs/BENCHMARKS.md).
//! mimalloc only purges from inside an allocation, so an idle daemon would keep what a burst
//! freed: [`return_freed_memory`] lets it purge every [`COLLECT_EVERY`].

use std::time::Duration;

/// mimalloc v3's `mi_option_arena_eager_commit` and `mi_option_purge_delay`: their positions in
/// `enum mi_option_e` of the vendored `mimalloc.h` (libmimalloc-sys names only older options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the allocator before it is returned to the OS.
pub const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// How often [`return_freed_memory`] lets mimalloc return what is past its purge delay.
pub const COLLECT_EVERY: Duration = Duration::from_millis(500);

/// Set the options, unless the environment sets them. Called from a constructor: it must not
/// allocate, so it reads the environment with libc's `getenv`.
pub extern "C" fn tune() {
    for (variable, option, value) in [
        (c"MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS),
        (c"MIMALLOC_ARENA_EAGER_COMMIT", MI_OPTION_ARENA_EAGER_COMMIT, 0),
    ] {
        // SAFETY: getenv with a NUL-terminated name; a setter of one of mimalloc's global
        // options; both before any thread exists.
        unsafe {
            if getenv(variable.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}

/// Every [`COLLECT_EVERY`], return to the OS the memory freed more than [`PURGE_DELAY_MS`] ago
/// (mimalloc would otherwise wait for the next allocation that needs a fresh page). Costs
/// nothing measurable: a few microseconds, twice a second. Does nothing unless mimalloc is the
/// allocator.
pub async fn return_freed_memory() {
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: mimalloc's collect of the calling thread's heap and of the process's arenas;
        // no argument but a flag.
        unsafe { libmimalloc_sys::mi_collect(false) };
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
