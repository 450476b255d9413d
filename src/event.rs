//! Authorization events: the (resource, action) pairs LangGraph's handlers are keyed by.

use std::fmt;

/// A resource as LangGraph's auth names it. Runs are reported as `threads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Threads, and everything on them: runs, state, history, streams.
    Threads,
    /// Assistants.
    Assistants,
    /// Crons.
    Crons,
    /// The long-term store.
    Store,
}

/// An action on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Create a resource.
    Create,
    /// Read one resource.
    Read,
    /// Update one resource.
    Update,
    /// Delete one resource.
    Delete,
    /// Search or count.
    Search,
    /// Create a run on a thread (threads only).
    CreateRun,
    /// Store: put an item.
    Put,
    /// Store: get an item.
    Get,
    /// Store: list namespaces.
    ListNamespaces,
}

impl Resource {
    /// All resources.
    pub const ALL: [Resource; 4] = [
        Resource::Threads,
        Resource::Assistants,
        Resource::Crons,
        Resource::Store,
    ];
    /// The name used in handler keys and permissions.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Threads => "threads",
            Resource::Assistants => "assistants",
            Resource::Crons => "crons",
            Resource::Store => "store",
        }
    }
    /// Parse a resource name.
    pub fn parse(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == s)
    }
    /// The actions LangGraph defines for this resource.
    pub fn actions(self) -> &'static [Action] {
        use Action::*;
        match self {
            Resource::Threads => &[Create, Read, Update, Delete, Search, CreateRun],
            Resource::Assistants | Resource::Crons => &[Create, Read, Update, Delete, Search],
            Resource::Store => &[Put, Get, Search, Delete, ListNamespaces],
        }
    }
}

impl Action {
    /// All actions.
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Read,
        Action::Update,
        Action::Delete,
        Action::Search,
        Action::CreateRun,
        Action::Put,
        Action::Get,
        Action::ListNamespaces,
    ];
    /// The name used in handler keys and permissions.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Search => "search",
            Action::CreateRun => "create_run",
            Action::Put => "put",
            Action::Get => "get",
            Action::ListNamespaces => "list_namespaces",
        }
    }
    /// Parse an action name.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One authorization event, e.g. `threads:create_run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Event {
    /// The resource.
    pub resource: Resource,
    /// The action.
    pub action: Action,
}

impl Event {
    /// Build an event.
    pub const fn new(resource: Resource, action: Action) -> Self {
        Event { resource, action }
    }
    /// Every valid event, in a fixed order (the index space of precomputed tables).
    pub fn all() -> impl Iterator<Item = Event> {
        Resource::ALL
            .into_iter()
            .flat_map(|r| r.actions().iter().map(move |a| Event::new(r, *a)))
    }
    /// Whether LangGraph defines this pair.
    pub fn is_valid(self) -> bool {
        self.resource.actions().contains(&self.action)
    }
    /// A dense index for precomputed per-event tables.
    pub fn index(self) -> usize {
        (self.resource as usize) * Action::ALL.len() + self.action as usize
    }
    /// Size of the dense index space.
    pub const INDEX_SPACE: usize = 4 * 9;
}

/// Why a `RESOURCE:ACTION` permission string names no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventParseError {
    /// No `:` between a resource and an action.
    #[error("{0:?} is not RESOURCE:ACTION (e.g. threads:read)")]
    NotResourceAction(String),
    /// The resource is not one LangGraph defines.
    #[error("unknown resource {0:?} (valid: threads, assistants, crons, store)")]
    UnknownResource(String),
    /// The action is not one the resource has.
    #[error("{resource} has no action {action:?} (valid: {})", valid_actions(.resource))]
    UnknownAction {
        /// The resource.
        resource: &'static str,
        /// The action as written.
        action: String,
    },
}

fn valid_actions(resource: &str) -> String {
    Resource::parse(resource)
        .map(|r| {
            r.actions()
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

impl std::str::FromStr for Event {
    type Err = EventParseError;
    /// Parse `RESOURCE:ACTION`, e.g. `threads:read`, naming what is wrong when it is not one.
    fn from_str(s: &str) -> Result<Event, EventParseError> {
        let (r, a) = s
            .split_once(':')
            .ok_or_else(|| EventParseError::NotResourceAction(s.to_string()))?;
        let resource =
            Resource::parse(r).ok_or_else(|| EventParseError::UnknownResource(r.to_string()))?;
        Action::parse(a)
            .map(|action| Event::new(resource, action))
            .filter(|e| e.is_valid())
            .ok_or_else(|| EventParseError::UnknownAction {
                resource: resource.as_str(),
                action: a.to_string(),
            })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.action.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings_parse_or_say_what_is_wrong() {
        assert_eq!(
            "threads:read".parse(),
            Ok(Event::new(Resource::Threads, Action::Read))
        );
        assert_eq!(
            "threads:frobnicate".parse::<Event>().unwrap_err().to_string(),
            "threads has no action \"frobnicate\" (valid: create, read, update, delete, search, create_run)"
        );
        assert_eq!(
            "crons:create_run".parse::<Event>().unwrap_err().to_string(),
            "crons has no action \"create_run\" (valid: create, read, update, delete, search)"
        );
        assert!(matches!(
            "runs:read".parse::<Event>(),
            Err(EventParseError::UnknownResource(_))
        ));
        assert!(matches!(
            "threads".parse::<Event>(),
            Err(EventParseError::NotResourceAction(_))
        ));
    }

    #[test]
    fn twenty_one_events_exist() {
        assert_eq!(Event::all().count(), 6 + 5 + 5 + 5);
    }

    #[test]
    fn create_run_is_threads_only() {
        assert!(Event::new(Resource::Threads, Action::CreateRun).is_valid());
        assert!(!Event::new(Resource::Assistants, Action::CreateRun).is_valid());
        assert!(!Event::new(Resource::Threads, Action::Put).is_valid());
    }

    #[test]
    fn indexes_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for e in Event::all() {
            assert!(e.index() < Event::INDEX_SPACE);
            assert!(seen.insert(e.index()));
        }
    }
}
