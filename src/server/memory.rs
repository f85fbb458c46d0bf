//! Giving the memory of a large review back to the system when it ends.
//!
//! The allocator keeps what is freed for a moment before giving it back, so that memory
//! freed and taken again at once (a burst of requests) is not returned and faulted back in
//! every time. After a large review that would leave its megabytes held until something
//! else allocates. The binary, which chooses the allocator, says here how to give back what
//! is waiting ([`set_release`]); the server calls it after each large review.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Sets what gives freed memory back to the system at once; the first call wins.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Gives freed memory back to the system, if the binary said how.
pub(super) fn release() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    fn other() {}

    #[test]
    fn release_calls_what_was_set_first() {
        set_release(count);
        set_release(other);
        let before = CALLS.load(Ordering::SeqCst);
        release();
        release();
        assert_eq!(CALLS.load(Ordering::SeqCst), before + 2);
    }
}
