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

    /// Waits until this replica is leader (at once if it is).
    pub async fn acquired(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|leader| *leader).await;
    }

    /// Waits until this replica is no longer leader.
    pub async fn lost(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|leader| !*leader).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_reported_once_and_waited_for() {
        let leadership = Leadership::new(false);
        assert!(!leadership.set(false), "no change");
        let waiter = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.acquired().await }
        });
        assert!(leadership.set(true));
        waiter.await.unwrap();
        assert!(leadership.is_leader());
        assert!(leadership.set(false));
        leadership.lost().await;
    }
}
