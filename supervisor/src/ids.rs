//! Random ids and the clock, for labels, nonces and run ids.

/// Random lowercase hex from the kernel's generator. `getrandom(2)` needs no file descriptor,
/// so this works when the process has none left (opening /dev/urandom then failed and took the
/// pool refiller down). Should the kernel still refuse, the bytes are a SHA-256 of the clock,
/// the process id and a counter: unique within and across processes, though guessable, so a
/// warning says so instead of a panic.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Err(error) = getrandom::fill(&mut buf) {
        use sha2::{Digest, Sha256};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        tracing::warn!(%error, "no random bytes from the kernel; hashing clock, pid, counter");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for chunk in buf.chunks_mut(32) {
            let mut hash = Sha256::new();
            hash.update(nanos.to_le_bytes());
            hash.update(std::process::id().to_le_bytes());
            hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
            chunk.copy_from_slice(&hash.finalize()[..chunk.len()]);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
