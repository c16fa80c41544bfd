//! At most one turn in flight per conversation: later messages of the same conversation
//! wait here (bounded) until the previous turn's reply arrived or timed out, so the workers
//! see a conversation's turns one at a time and in order. Also hands out `seq`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Default)]
pub struct Conversations {
    inner: Mutex<HashMap<String, Slot>>,
}

struct Slot {
    gate: Arc<Semaphore>,
    waiting: usize,
    next_seq: u64,
}

/// Holding this is being the conversation's turn in flight.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    pub seq: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("too many messages waiting in this conversation ({0}); please wait for the replies")]
pub struct TooManyWaiting(pub usize);

impl Conversations {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Waits for the conversation's previous turn to finish; refuses when `max_waiting`
    /// others already wait.
    pub async fn enter(&self, key: &str, max_waiting: usize) -> Result<Turn, TooManyWaiting> {
        let gate = {
            let mut map = self.inner.lock().expect("conversations lock");
            if map.len() > 10_000 {
                // Forget idle conversations (nobody holds or waits for their gate).
                map.retain(|_, s| s.waiting > 0 || s.gate.available_permits() == 0);
            }
            let slot = map.entry(key.to_string()).or_insert_with(|| Slot {
                gate: Arc::new(Semaphore::new(1)),
                waiting: 0,
                next_seq: 1,
            });
            if slot.waiting >= max_waiting {
                return Err(TooManyWaiting(slot.waiting));
            }
            slot.waiting += 1;
            slot.gate.clone()
        };
        // A caller that stops waiting (a cancelled HTTP request drops this future) gives its
        // place back: the guard counts it out however the wait ends.
        let waiting = Waiting { c: self, key };
        let permit = gate.acquire_owned().await.expect("gate never closed");
        drop(waiting);
        let mut map = self.inner.lock().expect("conversations lock");
        let slot = map
            .get_mut(key)
            .expect("slot exists while its gate is held");
        let seq = slot.next_seq;
        slot.next_seq += 1;
        Ok(Turn {
            _permit: permit,
            seq,
        })
    }
}

/// One caller counted in a conversation's `waiting` until it is dropped.
struct Waiting<'a> {
    c: &'a Conversations,
    key: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut map = self.c.inner.lock().expect("conversations lock");
        if let Some(slot) = map.get_mut(self.key) {
            slot.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_at_a_time_in_order_and_bounded() {
        let c = Conversations::new();
        let first = c.enter("k", 2).await.unwrap();
        assert_eq!(first.seq, 1);
        let c2 = c.clone();
        let second = tokio::spawn(async move { c2.enter("k", 2).await.map(|t| t.seq) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "second turn waits for the first");
        let c3 = c.clone();
        let _third = tokio::spawn(async move { c3.enter("k", 2).await.map(|t| t.seq) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(c.enter("k", 2).await.is_err(), "a third waiter is refused");
        drop(first);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        // Other conversations are independent.
        assert_eq!(c.enter("other", 2).await.unwrap().seq, 1);
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_back_its_place() {
        let c = Conversations::new();
        let first = c.enter("k", 2).await.unwrap();
        // Clients that stop waiting (an HTTP request cancelled): each wait is dropped.
        for _ in 0..16 {
            let gave_up = tokio::time::timeout(Duration::from_millis(5), c.enter("k", 2)).await;
            assert!(
                gave_up.is_err(),
                "the wait is still blocked by the first turn"
            );
        }
        let c2 = c.clone();
        let next = tokio::spawn(async move { c2.enter("k", 2).await.map(|t| t.seq) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert_eq!(
            next.await
                .unwrap()
                .expect("not refused: the cancelled waits left"),
            2,
            "cancelled waits took no seq either"
        );
    }
}
