//! A single-threaded notify-all: tasks of one shard wait for "something changed" (data written,
//! fsync done, space freed) and re-check their condition.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

/// Wakes every listener on [`Signal::notify`].
///
/// Invariant: a [`Listen`] created before a `notify` completes; one created after waits for the
/// next. Callers check their condition and create the listener with no `.await` in between, so
/// no notification is missed.
#[derive(Debug, Default)]
pub struct Signal {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
    spare: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes every current listener.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        // Swap into a spare vector so waking (which may register new wakers) never re-borrows,
        // and both vectors keep their capacity: no allocation per notification.
        let mut woken = self.spare.take();
        std::mem::swap(&mut woken, &mut *self.wakers.borrow_mut());
        for waker in woken.drain(..) {
            waker.wake();
        }
        *self.spare.borrow_mut() = woken;
    }

    /// A future that completes at the next [`Signal::notify`].
    pub fn listen(&self) -> Listen<'_> {
        Listen {
            signal: self,
            generation: self.generation.get(),
            registered: false,
        }
    }
}

/// Future of [`Signal::listen`].
#[derive(Debug)]
pub struct Listen<'a> {
    signal: &'a Signal,
    generation: u64,
    registered: bool,
}

impl Future for Listen<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.signal.wakers.borrow_mut();
        if !self.registered || !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        drop(wakers);
        self.registered = true;
        Poll::Pending
    }
}
