//! A bounded map that keeps what was used recently: two generations, the
//! current one and the one before. A lookup that hits the old generation
//! moves the entry forward; when the current generation is full it becomes
//! the old one and the previous old one is dropped whole. Memory stays below
//! two generations whatever the churn, with no per-entry bookkeeping.

use std::collections::HashMap;

#[derive(Debug)]
pub struct TwoGen<V> {
    current: HashMap<u64, V>,
    old: HashMap<u64, V>,
    per_generation: usize,
}

impl<V> TwoGen<V> {
    pub fn new(per_generation: usize) -> Self {
        Self {
            current: HashMap::new(),
            old: HashMap::new(),
            per_generation: per_generation.max(1),
        }
    }

    pub fn get(&mut self, key: u64) -> Option<&mut V> {
        if !self.current.contains_key(&key) {
            let v = self.old.remove(&key)?;
            self.insert(key, v);
        }
        self.current.get_mut(&key)
    }

    pub fn insert(&mut self, key: u64, value: V) {
        if self.current.len() >= self.per_generation && !self.current.contains_key(&key) {
            self.old = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_two_generations_and_keeps_what_is_used() {
        let mut c = TwoGen::new(4);
        c.insert(0, "hot");
        for k in 1..1000 {
            c.insert(k, "cold");
            assert!(c.len() <= 8, "{} entries", c.len());
            // A key looked up in every generation survives the churn.
            assert_eq!(c.get(0).copied(), Some("hot"), "lost the hot key at {k}");
        }
        assert!(
            c.get(1).is_none(),
            "an old cold key outlived two generations"
        );
    }
}
