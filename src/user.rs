//! The authenticated caller, as every authenticator produces it.

use serde_json::{Map, Value};

/// An authenticated user: LangGraph's `ctx.user` plus `ctx.permissions`, and roles for RBAC.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    /// Stable identity (LangGraph's `identity`).
    pub identity: String,
    /// Display name; defaults to the identity.
    pub display_name: String,
    /// Permissions (LangGraph's `ctx.permissions`).
    pub permissions: Vec<String>,
    /// Roles (for RBAC and `when` conditions).
    pub roles: Vec<String>,
    /// Extra attributes, readable from templates as `{user.attributes.KEY}`.
    pub attributes: Map<String, Value>,
}

impl User {
    /// Whether the user holds this permission.
    pub fn has_permission(&self, p: &str) -> bool {
        self.permissions.iter().any(|x| x == p)
    }
    /// Whether the user holds this role.
    pub fn has_role(&self, r: &str) -> bool {
        self.roles.iter().any(|x| x == r)
    }
}
