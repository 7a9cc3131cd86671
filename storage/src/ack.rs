//! Tasks waiting for an offset mark to pass their end, in offset order (appenders waiting for
//! acknowledgement here; the broker reuses it for sends waiting for a slave).
//!
//! Appends end at increasing offsets and acknowledgement moves one mark forward, so the waiters
//! form a queue sorted by end offset: an advance wakes exactly the waiters it satisfies, from the
//! front. (A notify-all here woke every in-flight appender on every write completion: with
//! hundreds of appenders that herd cost more than the appends.)

use std::{cell::RefCell, collections::VecDeque, task::Waker};

/// Waiters sorted by the end offset they wait for.
#[derive(Debug, Default)]
pub struct AckQueue {
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    woken: RefCell<Vec<Waker>>,
}

impl AckQueue {
    /// Registers `waker` to be woken once the acknowledged offset reaches `end`.
    pub fn register(&self, end: u64, waker: Waker) {
        let mut waiters = self.waiters.borrow_mut();
        // Appends register in offset order, so this is nearly always the back.
        let at = waiters.len() - waiters.iter().rev().take_while(|(e, _)| *e > end).count();
        waiters.insert(at, (end, waker));
    }

    /// Wakes every waiter whose end is at or below `acknowledged`.
    pub fn wake_up_to(&self, acknowledged: u64) {
        let mut woken = self.woken.take();
        {
            let mut waiters = self.waiters.borrow_mut();
            while waiters.front().is_some_and(|(end, _)| *end <= acknowledged) {
                if let Some((_, waker)) = waiters.pop_front() {
                    woken.push(waker);
                }
            }
        }
        // Wake outside the borrow: a woken task may register again.
        for waker in woken.drain(..) {
            waker.wake();
        }
        *self.woken.borrow_mut() = woken;
    }

    /// Wakes everyone (failure, close): each re-checks the store's state.
    pub fn wake_all(&self) {
        self.wake_up_to(u64::MAX);
    }
}
