//! The binaries' allocator: mimalloc, committing arena memory only as used, returning freed memory 100 ms later, and metering what a routing script holds.
//!
//! Without it, the ingest path's transient peaks (request bodies, decoded records,
//! notifications) stay resident: docs/BENCHMARKS.md measured 235 MiB at 100K alerts with
//! mimalloc's defaults and 107 MiB with these, at the same throughput. The options must be set
//! before mimalloc reserves its first arena, which happens before `main`, so the binaries set
//! them from a constructor ([`crate::daemon_allocator!`]). An operator's `MIMALLOC_*` variables
//! still win.
//!
//! Freed memory goes back to the OS [`PURGE_DELAY_MS`] after it was freed, not at once: under
//! load the same pages are freed and wanted again within milliseconds. Returning them at once
//! cost 68-72K page faults in the 20K burst, 100 ms 46-47K, 1 s 42-43K; the CPU saved at 1 s
//! was 8-11 % (docs/BENCHMARKS.md). 100 ms keeps most of that and the RSS with 100K alerts
//! within 1-2 MiB of purging at once (1 s cost 4-6 MiB more, past the 100 MiB target).
//! mimalloc only purges from inside an allocation, so an idle daemon would keep what a burst
//! freed: [`return_freed_memory`] lets it purge every [`COLLECT_EVERY`].

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::time::Duration;

/// The binaries' global allocator: mimalloc, which also keeps count of the bytes the current
/// thread holds while a [`Meter`] runs on it. A routing script's evaluation runs under one, so
/// that a script cannot hold more memory than [`crate::route::limits::MEMORY_BYTES`] (Rhai
/// bounds sizes, not memory: docs/ROUTING.md). Off a meter it costs one thread-local read per
/// allocation.
pub struct Metered;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread since its meter started; `None`
    /// without one. A const, destructor-free thread-local: reading it never allocates.
    static METERED: Cell<Option<isize>> = const { Cell::new(None) };
}

fn count(bytes: isize) {
    METERED.with(|m| {
        if let Some(held) = m.get() {
            m.set(Some(held + bytes));
        }
    });
}

// SAFETY: every method forwards to mimalloc's, with the same arguments; counting allocates
// nothing.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded as received.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded as received.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: forwarded as received.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded as received.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Counts what the current thread allocates (less what it frees) until dropped. Meters nest:
/// an inner one counts from zero, and the outer one resumes when it ends. Counts nothing
/// unless the global allocator is [`Metered`].
pub struct Meter {
    outer: Option<isize>,
}

impl Meter {
    /// Start counting from zero on this thread.
    pub fn start() -> Meter {
        Meter { outer: METERED.with(|m| m.replace(Some(0))) }
    }

    /// The bytes this thread allocated, less those it freed, since this meter started.
    pub fn held() -> isize {
        METERED.with(|m| m.get().unwrap_or(0))
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        METERED.with(|m| {
            let inner = m.get().unwrap_or(0);
            m.set(self.outer.map(|outer| outer + inner));
        });
    }
}

/// mimalloc v3's `mi_option_arena_eager_commit` and `mi_option_purge_delay`: their positions in
/// `enum mi_option_e` of the vendored `mimalloc.h` (libmimalloc-sys names only older options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the allocator before it is returned to the OS.
pub const PURGE_DELAY_MS: std::ffi::c_long = 100;

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
            if libc::getenv(variable.as_ptr()).is_null() {
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
        collect();
    }
}

/// Let mimalloc return what is past its purge delay, now.
fn collect() {
    // SAFETY: mimalloc's collect of the calling thread's heap and of the process's arenas; no
    // argument but a flag.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Make [`Metered`] the binary's global allocator and run [`tune`] before `main` (and before
/// the runtime's first allocation). Every binary that runs the daemon's code (`belfry`, the
/// daemon the tests start, the benches) puts it in its root module.
#[macro_export]
macro_rules! daemon_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::alloc::Metered = $crate::alloc::Metered;

        // ELF's constructor section (Linux); elsewhere mimalloc keeps its defaults.
        #[cfg(target_os = "linux")]
        #[used]
        #[unsafe(link_section = ".init_array")]
        static TUNE_ALLOCATOR: extern "C" fn() = $crate::alloc::tune;
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit tests run on [`Metered`] (lib.rs), as the binaries do.
    #[test]
    fn a_meter_counts_what_its_thread_holds_and_meters_nest() {
        assert_eq!(Meter::held(), 0, "no meter, no count");
        let outer = Meter::start();
        let kept: Vec<u8> = vec![1; 1 << 20];
        let held = Meter::held();
        assert!((1 << 20..(1 << 20) + 4096).contains(&held), "{held}");
        {
            let _inner = Meter::start();
            assert_eq!(Meter::held(), 0, "an inner meter counts from zero");
            let freed: Vec<u8> = vec![2; 1 << 16];
            drop(freed);
            let from_another_thread = std::thread::spawn(|| vec![3u8; 1 << 22]).join().unwrap();
            assert!(Meter::held() < 4096, "freed, and another thread's bytes are not counted: {}", Meter::held());
            // Freed here, they would count against this thread's meter (it counts frees too), so
            // they go back to be freed where they came from.
            std::thread::spawn(move || drop(from_another_thread)).join().unwrap();
        }
        assert!(Meter::held() >= 1 << 20, "the outer meter resumes: {}", Meter::held());
        drop(kept);
        assert!(Meter::held() < 4096, "{}", Meter::held());
        drop(outer);
        assert_eq!(Meter::held(), 0);
    }

    fn rss_mib() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        kb / 1024.0
    }

    /// The reason for the collector: mimalloc keeps freed memory past its purge delay until an
    /// allocation needs a fresh page, so an idle process would keep a burst's peak.
    #[test]
    #[cfg(target_os = "linux")]
    fn freed_memory_is_kept_while_idle_and_returned_by_a_collect() {
        // SAFETY: mimalloc's own allocation functions and option setter, used on memory this
        // test owns; the test runs in a process of its own (nextest), so nothing else allocates
        // from these pages.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
            let before = rss_mib();
            let blocks: Vec<*mut u8> = (0..4096)
                .map(|_| {
                    let p = libmimalloc_sys::mi_malloc(16 << 10).cast::<u8>();
                    std::ptr::write_bytes(p, 1, 16 << 10);
                    p
                })
                .collect();
            let peak = rss_mib();
            assert!(peak - before > 56.0, "64 MiB touched: {before:.1} -> {peak:.1} MiB");
            for p in blocks {
                libmimalloc_sys::mi_free(p.cast());
            }
            // mimalloc's clock is the real one: wait out its delay with nothing allocating.
            std::thread::sleep(Duration::from_millis(3 * PURGE_DELAY_MS as u64));
            let idle = rss_mib();
            assert!(idle - before > 40.0, "kept while idle: {before:.1} -> {idle:.1} MiB");
            collect();
            let collected = rss_mib();
            assert!(collected - before < 16.0, "returned by a collect: {before:.1} -> {collected:.1} MiB (idle {idle:.1})");
        }
    }
}
