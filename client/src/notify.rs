//! Wake-ups between tasks of one runtime thread, without locks.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::Instant;

/// A wake-up for tasks on the same thread. A notification sent while nobody waits is kept, so a
/// waiter never misses one between checking its condition and going to sleep. Every waiter
/// registered when [`Notify::notify`] runs is woken; the first to run consumes the notification.
#[derive(Debug, Default)]
pub struct Notify {
    notified: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Wakes the waiters (or the next one to wait).
    pub fn notify(&self) {
        self.notified.set(true);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Waits for a notification.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                let mut wakers = self.wakers.borrow_mut();
                if !wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await;
    }

    /// Waits for a notification or `deadline`; true when notified.
    pub async fn wait_until(&self, deadline: Instant) -> bool {
        compio::time::timeout_at(deadline, self.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::time::Duration;

    #[test]
    fn kept_notification_deadline_and_cross_task_wake() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let notify = Rc::new(Notify::default());
            notify.notify();
            assert!(
                notify
                    .wait_until(Instant::now() + Duration::from_secs(5))
                    .await
            );
            assert!(
                !notify
                    .wait_until(Instant::now() + Duration::from_millis(20))
                    .await
            );
            let other = Rc::clone(&notify);
            compio::runtime::spawn(async move {
                compio::time::sleep(Duration::from_millis(5)).await;
                other.notify();
            })
            .detach();
            assert!(
                notify
                    .wait_until(Instant::now() + Duration::from_secs(5))
                    .await
            );
        });
    }
}
