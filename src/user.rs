//! The authenticated caller, as every authenticator produces it.

use std::sync::OnceLock;

use http::HeaderValue;
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
    /// The identity headers forwarded upstream, rendered on first use: authenticators cache
    /// the user with its credential, so a cached user's requests reuse them.
    pub rendered: Rendered,
}

/// The values of the identity headers graphguard forwards for a user; `None` where the value
/// cannot be a header (a control character, say), and the header is then not sent.
#[derive(Debug, Clone)]
pub struct UserHeaderValues {
    /// The identity.
    pub identity: Option<HeaderValue>,
    /// The display name.
    pub display_name: Option<HeaderValue>,
    /// The permissions as a JSON array.
    pub permissions: Option<HeaderValue>,
    /// The roles as a JSON array.
    pub roles: Option<HeaderValue>,
}

/// A lazily rendered [`UserHeaderValues`]: derived from the user's fields, so it takes no
/// part in comparisons.
#[derive(Debug, Clone, Default)]
pub struct Rendered(OnceLock<UserHeaderValues>);

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
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
    /// The identity header values, rendered once for this user.
    pub fn header_values(&self) -> &UserHeaderValues {
        self.rendered.0.get_or_init(|| {
            // Stored shared, so that each request's copy is a reference count.
            let value = |s: &str| HeaderValue::from_str(s).ok().inspect(|v| drop(v.clone()));
            let list = |l: &[String]| serde_json::to_string(l).ok().and_then(|s| value(&s));
            UserHeaderValues {
                identity: value(&self.identity),
                display_name: value(&self.display_name),
                permissions: list(&self.permissions),
                roles: list(&self.roles),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_render_lists_as_json_and_skip_what_cannot_be_a_header() {
        let u = User {
            identity: "alice".into(),
            display_name: "Alice\nSmith".into(),
            permissions: vec!["threads:read".into(), "a\"b".into()],
            roles: Vec::new(),
            ..User::default()
        };
        let h = u.header_values();
        assert_eq!(
            h.identity.as_ref().map(HeaderValue::as_bytes),
            Some(&b"alice"[..])
        );
        assert!(
            h.display_name.is_none(),
            "a newline cannot be sent in a header"
        );
        assert_eq!(
            h.permissions.as_ref().map(HeaderValue::as_bytes),
            Some(&br#"["threads:read","a\"b"]"#[..])
        );
        assert_eq!(
            h.roles.as_ref().map(HeaderValue::as_bytes),
            Some(&b"[]"[..])
        );
        // Rendered once: the second call returns the same values.
        assert!(std::ptr::eq(h, u.header_values()));
    }
}
