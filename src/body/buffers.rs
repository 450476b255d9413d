//! Buffers for request bodies that arrive in several pieces, kept per thread and reused.
//!
//! A body that must be read whole (to decide on it and rewrite it) and arrives in more
//! than one read is gathered into one buffer. Allocating that buffer afresh for every large
//! request costs more than the copy into it: the allocator hands back memory it has just
//! returned to the kernel, and every page faults in again. Each thread keeps a few such
//! buffers, bounded in number and size, and a request takes one and gives it back when
//! nothing else holds it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};

/// The most room taken ahead for a body's declared length; beyond it the buffer grows as
/// bytes arrive.
const PREALLOCATE_AT_MOST: usize = 1 << 20;

/// Buffers kept per thread.
const KEEP: usize = 4;
/// Buffers larger than this are not kept (a rare huge body does not pin its memory).
const KEEP_CAPACITY: usize = 1 << 20;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `len` bytes.
pub fn take(len: usize) -> BytesMut {
    let kept = FREE.with_borrow_mut(|free| free.pop());
    match kept {
        Some(mut b) => {
            b.clear();
            b.reserve(len);
            b
        }
        None => BytesMut::with_capacity(len),
    }
}

/// A buffer for a body of `declared` bytes (its Content-Length, 0 if none) of which `have`
/// arrived: room for all of it, but never more than `PREALLOCATE_AT_MOST` (1 MiB) ahead of what
/// arrived, so a client that declares 32 MiB and stalls does not make the gateway hold
/// 32 MiB for it.
pub fn take_for(declared: usize, have: usize) -> BytesMut {
    take(
        declared
            .min(have.saturating_add(PREALLOCATE_AT_MOST))
            .max(have),
    )
}

/// Give a body back: its buffer is kept when this was the last reference to it and it is
/// not too large.
pub fn give_back(body: Bytes) {
    let Ok(b) = body.try_into_mut() else {
        return;
    };
    if b.capacity() > KEEP_CAPACITY {
        return;
    }
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(b);
        }
    });
}

/// The request-body bytes the gateway holds at once, across every connection and thread.
///
/// A body is read whole before it is decided on, so without a bound `N` clients sending
/// `--max-body-bytes` each make the gateway hold `N` times that. A request reserves its
/// declared length before a byte is read (a chunked body reserves as its pieces arrive); when
/// the budget cannot cover it, the request is refused with 503 and its body is never read.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BodyBudget {
            limit,
            held: AtomicUsize::new(0),
        }
    }

    /// Bytes reserved right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// An empty reservation, grown with [`Reservation::grow`].
    pub fn reservation(&self) -> Reservation<'_> {
        Reservation {
            budget: self,
            bytes: 0,
        }
    }

    fn take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes of a [`BodyBudget`] held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Reservation<'_> {
    /// Reserve `n` more bytes; `false` (and nothing reserved) when the budget cannot cover them.
    pub fn grow(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let ok = self.budget.take(n);
        if ok {
            self.bytes += n;
        }
        ok
    }

    /// The bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_and_shared_ones_are_not_kept() {
        let mut b = take(100_000);
        b.extend_from_slice(&[7u8; 100_000]);
        let ptr = b.as_ptr();
        let frozen = b.freeze();
        let other = frozen.slice(10..20);
        give_back(frozen);
        // Still referenced by `other`: not kept, so a new one is allocated.
        let fresh = take(10);
        assert_ne!(fresh.as_ptr(), ptr);
        drop(other);
        let mut c = take(100_000);
        c.extend_from_slice(&[1u8; 100_000]);
        let ptr = c.as_ptr();
        give_back(c.freeze());
        let again = take(50_000);
        assert_eq!(again.as_ptr(), ptr, "the same memory is reused");
        assert!(again.is_empty() && again.capacity() >= 100_000);
        // Huge buffers go back to the allocator.
        let huge = take(KEEP_CAPACITY + 1);
        let huge_ptr = huge.as_ptr();
        give_back(huge.freeze());
        assert_ne!(take(1).as_ptr(), huge_ptr);
    }

    #[test]
    fn room_ahead_of_the_bytes_that_arrived_is_bounded() {
        assert!(take_for(32 << 20, 100).capacity() <= PREALLOCATE_AT_MOST + 100 + 64);
        assert!(take_for(300_000, 70_000).capacity() >= 300_000);
        assert!(take_for(0, 70_000).capacity() >= 70_000);
        // A declared length below what arrived (a lying client) still fits the bytes.
        assert!(take_for(10, 70_000).capacity() >= 70_000);
    }

    #[test]
    fn a_budget_refuses_what_it_cannot_cover_and_gets_bytes_back_on_drop() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.grow(60));
        let mut b = budget.reservation();
        assert!(!b.grow(41), "60 + 41 > 100");
        assert_eq!(b.bytes(), 0);
        assert!(b.grow(40));
        assert_eq!(budget.held(), 100);
        assert!(!a.grow(1));
        drop(a);
        assert_eq!(budget.held(), 40);
        assert!(b.grow(60));
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
