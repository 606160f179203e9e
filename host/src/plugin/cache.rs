//! On-disk cache of compiled components, keyed by the component's SHA-256 and the engine's compatibility hash.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled now (and written to the cache).
    Compiled,
    /// Loaded from the cache.
    Cached,
}

/// A compiled component and how long it took to get.
pub struct Loaded {
    /// The component.
    pub component: Component,
    /// Compiled now or from cache.
    pub source: LoadSource,
    /// Time to obtain it.
    pub elapsed: Duration,
}

/// The cache file for `wasm_sha256` under `engine`'s configuration: a `.cwasm` only loads into an
/// engine configured the same way (epoch interruption, allocator...), so the key includes it.
pub fn cache_path(dir: &Path, engine: &Engine, wasm_sha256: &str) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!("{wasm_sha256}-{:016x}.cwasm", hasher.finish()))
}

/// Load `bytes` (whose SHA-256 is `sha256`) from the cache, or compile and cache it.
///
/// A cache that cannot be written is not fatal: the component is still compiled and used.
pub fn load(engine: &Engine, dir: &Path, bytes: &[u8], sha256: &str) -> wasmtime::Result<Loaded> {
    let started = Instant::now();
    let path = cache_path(dir, engine, sha256);
    // Read into memory rather than `deserialize_file`: a mapped file that is later truncated or
    // rewritten in place (by an operator, a backup tool, a test) would crash the host with SIGBUS.
    if let Ok(cached) = std::fs::read(&path) {
        // SAFETY: the file was written by `precompile_component` of an engine with the same
        // compatibility hash, in a directory the operator reserves for Belfry (see the docs of
        // `runtime.cache_dir`). wasmtime still checks the header and the engine configuration.
        match unsafe { Component::deserialize(engine, &cached) } {
            Ok(component) => return Ok(Loaded { component, source: LoadSource::Cached, elapsed: started.elapsed() }),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cache entry; recompiling"),
        }
    }
    let compiled = engine.precompile_component(bytes)?;
    if let Err(e) = write_atomically(dir, &path, &compiled) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the plugin cache; plugins will be recompiled at every start");
    }
    // SAFETY: `compiled` was produced just now by this engine.
    let component = unsafe { Component::deserialize(engine, &compiled)? };
    Ok(Loaded { component, source: LoadSource::Compiled, elapsed: started.elapsed() })
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
