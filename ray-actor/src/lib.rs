//! Actor-side types; grows with the actors issue.
