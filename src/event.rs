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

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.action.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
