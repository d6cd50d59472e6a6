//! Task events as they travel from a core worker to the GCS: one packed batch a second per
//! process (postcard, fixed-size ids, names sent once per batch and referred to by index),
//! cheap to make and to read at hundreds of thousands of events a second.

use serde::{Deserialize, Serialize};

/// What one process saw of one task: the fields it knows, zero or `None` otherwise. The
/// owner reports the submission (name, parent) and failures it sees; the worker the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub task: [u8; 16],
    /// 0 for its first run, 1 for the first retry, ...
    pub attempt: u32,
    /// The latest state this event reports (a `ray_proto::TaskStatus`).
    pub status: i32,
    /// Index into the batch's names, plus one (0: not named by this event).
    pub name: u32,
    pub actor: Option<[u8; 16]>,
    pub parent: Option<[u8; 16]>,
    /// Wall-clock microseconds since the Unix epoch (0: not in this event).
    pub submitted_us: u64,
    /// Set by the worker that ran it.
    pub running_us: u64,
    pub ended_us: u64,
    /// A failure's kind (Ray's `ERROR_TYPE`) and message.
    pub error: Option<(String, String)>,
}

/// The events of one batch and the names they refer to.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub names: Vec<String>,
    pub events: Vec<TaskEvent>,
}

impl EventBatch {
    /// The batch as bytes (`AddTaskEventsRequest.packed`).
    pub fn encode(&self) -> Vec<u8> {
        // Plain data: encoding cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// A batch from its bytes.
    pub fn decode(bytes: &[u8]) -> Result<EventBatch, crate::StateError> {
        postcard::from_bytes(bytes).map_err(|e| crate::StateError::BadEvents(e.to_string()))
    }

    /// The name an event refers to, if any.
    pub fn name_of(&self, event: &TaskEvent) -> Option<&str> {
        let i = usize::try_from(event.name).ok()?.checked_sub(1)?;
        self.names.get(i).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_comes_back_as_it_went() {
        let batch = EventBatch {
            names: vec!["app::f".into()],
            events: vec![
                TaskEvent {
                    task: [1; 16],
                    status: 2,
                    name: 1,
                    submitted_us: 5,
                    ..Default::default()
                },
                TaskEvent {
                    task: [2; 16],
                    status: 6,
                    error: Some(("WORKER_DIED".into(), "gone".into())),
                    ..Default::default()
                },
            ],
        };
        let back = EventBatch::decode(&batch.encode()).unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.name_of(&back.events[0]), Some("app::f"));
        assert_eq!(back.name_of(&back.events[1]), None);
        assert!(EventBatch::decode(&[0xff, 0xff]).is_err());
    }
}
