//! Filters on rows (`state=RUNNING`, `name!=f`), as `ray list --filter` takes them: each
//! compares one field's text; a row passes if every filter does. Applied where the rows are
//! (the GCS), before the limit.

use crate::StateError;

/// How a filter compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
}

/// One filter: `key op value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: String,
    pub op: Op,
    pub value: String,
}

impl Filter {
    /// A filter from `key=value` or `key!=value` (spaces around the parts are ignored).
    ///
    /// ```
    /// use ray_state::{Filter, Op};
    /// let f = Filter::parse("state != FINISHED").unwrap();
    /// assert_eq!((f.key.as_str(), f.op, f.value.as_str()), ("state", Op::NotEqual, "FINISHED"));
    /// assert!(Filter::parse("state").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Filter, StateError> {
        let (key, op, value) = if let Some((k, v)) = text.split_once("!=") {
            (k, Op::NotEqual, v)
        } else if let Some((k, v)) = text.split_once('=') {
            (k, Op::Equal, v)
        } else {
            return Err(StateError::BadFilter(format!(
                "{text:?}: expected key=value or key!=value"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(StateError::BadFilter(format!("{text:?}: no key")));
        }
        Ok(Filter {
            key: key.to_string(),
            op,
            value: value.trim().to_string(),
        })
    }

    pub(crate) fn to_wire(&self) -> ray_proto::StateFilter {
        ray_proto::StateFilter {
            key: self.key.clone(),
            op: match self.op {
                Op::Equal => "=",
                Op::NotEqual => "!=",
            }
            .into(),
            value: self.value.clone(),
        }
    }

    /// A filter as it came over the wire.
    pub fn from_wire(f: &ray_proto::StateFilter) -> Result<Filter, StateError> {
        let op = match f.op.as_str() {
            "=" | "" => Op::Equal,
            "!=" => Op::NotEqual,
            other => {
                return Err(StateError::BadFilter(format!(
                    "unknown operator {other:?} (= or !=)"
                )))
            }
        };
        Ok(Filter {
            key: f.key.clone(),
            op,
            value: f.value.clone(),
        })
    }
}

/// A row that filters can look at: its fields by name, as text.
pub trait Fields {
    /// The names filters may use.
    const KEYS: &'static [&'static str];
    /// The field's text (`None`: the row has none, which only `!=` passes).
    fn field(&self, key: &str) -> Option<String>;
}

/// Checks that every filter names a field of `R` (an unknown key is an error, not an empty
/// list).
pub fn check<R: Fields>(filters: &[Filter]) -> Result<(), StateError> {
    match filters.iter().find(|f| !R::KEYS.contains(&f.key.as_str())) {
        None => Ok(()),
        Some(f) => Err(StateError::UnknownKey {
            key: f.key.clone(),
            known: R::KEYS.join(", "),
        }),
    }
}

/// True if `row` passes every filter (case-insensitive, as Ray compares strings).
pub fn matches<R: Fields>(row: &R, filters: &[Filter]) -> bool {
    filters.iter().all(|f| {
        let equal = row
            .field(&f.key)
            .is_some_and(|v| v.eq_ignore_ascii_case(&f.value));
        match f.op {
            Op::Equal => equal,
            Op::NotEqual => !equal,
        }
    })
}

/// Filters on the wire, checked against `R`'s fields.
pub fn from_request<R: Fields>(
    request: &ray_proto::ListRequest,
) -> Result<Vec<Filter>, StateError> {
    let filters = request
        .filters
        .iter()
        .map(Filter::from_wire)
        .collect::<Result<Vec<_>, _>>()?;
    check::<R>(&filters)?;
    Ok(filters)
}

/// The limit a request asks for (0: [`DEFAULT_LIMIT`]).
pub fn limit_of(request: &ray_proto::ListRequest) -> usize {
    match request.limit {
        0 => DEFAULT_LIMIT,
        n => n as usize,
    }
}

/// Rows listed when no limit is given (Ray's default).
pub const DEFAULT_LIMIT: usize = 100;
