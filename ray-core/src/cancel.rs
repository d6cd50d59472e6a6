//! The tasks this process was asked to cancel while they run or wait here (Ray's
//! `ray.cancel`): a task queued here does not start, and a running task's next ray call
//! fails with [`Error::TaskCancelled`], which ends it the way its code ends on an error.
//!
//! Invariant: a mark is dropped once its task has been answered; the set stays small (a mark
//! for a task that finished before the cancel came is dropped with the oldest ones).

use crate::error::{Error, Result};
use parking_lot::Mutex;
use ray_common::TaskId;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Marks kept at most: a mark outlives its task only if the cancel came after the task ended.
const MAX_MARKS: usize = 4096;

/// The cancelled tasks of one process.
#[derive(Default)]
pub(crate) struct Cancelled {
    marks: Mutex<VecDeque<TaskId>>,
    /// How many marks there are: the checks on every ray call read only this while none is.
    len: AtomicUsize,
}

impl Cancelled {
    /// Task `task` is cancelled.
    pub fn mark(&self, task: TaskId) {
        let mut marks = self.marks.lock();
        if !marks.contains(&task) {
            marks.push_back(task);
            if marks.len() > MAX_MARKS {
                marks.pop_front();
            }
        }
        self.len.store(marks.len(), Ordering::Release);
    }

    /// Whether any task is marked (a load: what the hot paths check first).
    pub fn any(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }

    /// Whether `task` is cancelled.
    pub fn is(&self, task: &TaskId) -> bool {
        self.len.load(Ordering::Acquire) > 0 && self.marks.lock().contains(task)
    }

    /// `task` was answered: its mark, if any, goes.
    pub fn forget(&self, task: &TaskId) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut marks = self.marks.lock();
        marks.retain(|t| t != task);
        self.len.store(marks.len(), Ordering::Release);
    }

    /// `Err(TaskCancelled)` if the task running on the calling thread is cancelled: what its
    /// next ray call returns.
    pub fn check_current(&self) -> Result<()> {
        if self.len.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let marks = self.marks.lock();
        let mut which = None;
        if crate::task_context::any_running_task(|t| {
            which = Some(*t);
            marks.contains(t)
        }) {
            return Err(Error::TaskCancelled {
                function: format!("task {}", which.map(|t| t.to_hex()).unwrap_or_default()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_found_forgotten_and_bounded() {
        let c = Cancelled::default();
        let t = TaskId([1; 16]);
        assert!(!c.is(&t));
        c.mark(t);
        c.mark(t);
        assert!(c.is(&t));
        c.forget(&t);
        assert!(!c.is(&t));
        for i in 0..(MAX_MARKS as u32 + 10) {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            c.mark(TaskId(id));
        }
        assert_eq!(c.len.load(Ordering::Relaxed), MAX_MARKS);
        assert!(!c.is(&TaskId([0; 16])), "the oldest mark went first");
    }
}
