//! Whether this replica may write: one signal, set by leader election (always true without it) and read by
//! the writer before every write and by the controller, which reconciles everything when leadership comes.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Leadership(Arc<watch::Sender<bool>>);

impl Leadership {
    pub fn new(leader: bool) -> Leadership {
        Leadership(Arc::new(watch::Sender::new(leader)))
    }

    /// Sets leadership; returns whether it changed.
    pub fn set(&self, leader: bool) -> bool {
        self.0
            .send_if_modified(|current| std::mem::replace(current, leader) != leader)
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Leadership gained from now on: what was held or not held when this is called counts as seen.
    pub fn gains(&self) -> Gains {
        Gains(self.0.subscribe())
    }
}

/// Each time this replica becomes leader (see [`Leadership::gains`]).
pub struct Gains(watch::Receiver<bool>);

impl Gains {
    /// Waits until leadership is gained again; flips back and forth meanwhile count once.
    pub async fn next(&mut self) {
        loop {
            if self.0.changed().await.is_err() {
                return std::future::pending().await; // no one sets leadership any more
            }
            if *self.0.borrow_and_update() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_leadership_gained_after_the_call_is_reported() {
        let leadership = Leadership::new(true);
        assert!(!leadership.set(true), "no change");
        let mut gains = leadership.gains();
        let next = |gains: &mut Gains| futures::FutureExt::now_or_never(gains.next()).is_some();
        assert!(!next(&mut gains), "leadership held at the call is no gain");
        assert!(leadership.set(false));
        assert!(!next(&mut gains), "losing it is no gain");
        assert!(leadership.set(true));
        assert!(next(&mut gains));
        assert!(!next(&mut gains), "one gain is reported once");
        assert!(leadership.is_leader());
    }
}
