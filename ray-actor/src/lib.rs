//! The actor lifecycle as Ray defines it: states, the restart budget, and names unique per
//! namespace. Pure data and rules: the GCS (ray-gcs) drives them and does the I/O.
//!
//! ```
//! use ray_actor::{ActorState, RestartBudget};
//! let mut budget = RestartBudget::new(1);
//! assert_eq!(budget.on_death(false), ActorState::Restarting);
//! assert_eq!(budget.on_death(false), ActorState::Dead);
//! ```

use std::collections::HashMap;

/// Where an actor is in its life (Ray's `PENDING_CREATION`, `ALIVE`, `RESTARTING`, `DEAD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorState {
    /// Being placed and constructed.
    Pending,
    /// Constructed; takes calls.
    Alive,
    /// Its process died; being placed and constructed again.
    Restarting,
    /// Gone for good.
    Dead,
}

impl ActorState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Pending => "PENDING",
            ActorState::Alive => "ALIVE",
            ActorState::Restarting => "RESTARTING",
            ActorState::Dead => "DEAD",
        }
    }
}

/// How many more times an actor may be restarted after its process dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartBudget {
    max: i32,
    used: u32,
}

impl RestartBudget {
    /// `max`: restarts allowed (-1: forever, 0: none, as Ray's `max_restarts`).
    pub fn new(max: i32) -> Self {
        RestartBudget { max, used: 0 }
    }

    /// Restarts done so far.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// The process died: restart (spending one) or die. `killed` (by `ray::kill`, or its owner
    /// died) never restarts.
    pub fn on_death(&mut self, killed: bool) -> ActorState {
        if killed {
            return ActorState::Dead;
        }
        if self.max < 0 || (self.used as i64) < self.max as i64 {
            self.used += 1;
            ActorState::Restarting
        } else {
            ActorState::Dead
        }
    }
}

/// Why a name could not be taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTaken {
    /// The actor holding the name.
    pub holder: Vec<u8>,
}

/// Actor names, unique per namespace. A dead actor's name can be taken again.
#[derive(Default, Debug)]
pub struct Names {
    by_name: HashMap<(String, String), Vec<u8>>,
}

impl Names {
    /// The live actor holding `name` in `namespace`.
    pub fn lookup(&self, namespace: &str, name: &str) -> Option<&[u8]> {
        self.by_name
            .get(&(namespace.to_string(), name.to_string()))
            .map(Vec::as_slice)
    }

    /// Takes `name` for `actor`, unless a live actor holds it.
    pub fn claim(
        &mut self,
        namespace: &str,
        name: &str,
        actor: &[u8],
        is_alive: impl Fn(&[u8]) -> bool,
    ) -> Result<(), NameTaken> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(holder) = self.by_name.get(&key) {
            if is_alive(holder) {
                return Err(NameTaken {
                    holder: holder.clone(),
                });
            }
        }
        self.by_name.insert(key, actor.to_vec());
        Ok(())
    }

    /// Frees the name of a dead actor.
    pub fn release(&mut self, actor: &[u8]) {
        self.by_name.retain(|_, v| v != actor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_budget_follows_max_restarts() {
        let mut none = RestartBudget::new(0);
        assert_eq!(none.on_death(false), ActorState::Dead);
        let mut forever = RestartBudget::new(-1);
        for _ in 0..100 {
            assert_eq!(forever.on_death(false), ActorState::Restarting);
        }
        assert_eq!(forever.on_death(true), ActorState::Dead);
        let mut two = RestartBudget::new(2);
        assert_eq!(two.on_death(false), ActorState::Restarting);
        assert_eq!(two.on_death(false), ActorState::Restarting);
        assert_eq!(two.on_death(false), ActorState::Dead);
        assert_eq!(two.used(), 2);
    }

    #[test]
    fn names_are_unique_per_namespace_and_reusable_after_death() {
        let mut names = Names::default();
        names.claim("web", "hits", b"a", |_| true).unwrap();
        names.claim("other", "hits", b"b", |_| true).unwrap();
        assert_eq!(
            names.claim("web", "hits", b"c", |_| true),
            Err(NameTaken {
                holder: b"a".to_vec()
            })
        );
        assert_eq!(names.lookup("web", "hits"), Some(&b"a"[..]));
        names.claim("web", "hits", b"c", |id| id != b"a").unwrap();
        assert_eq!(names.lookup("web", "hits"), Some(&b"c"[..]));
        names.release(b"c");
        assert_eq!(names.lookup("web", "hits"), None);
    }
}
