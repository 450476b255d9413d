//! The `anonymous` authenticator: a fixed identity for requests no other authenticator
//! recognised (opt-in).

use std::sync::Arc;

use http::HeaderValue;

use crate::authn::config::AnonymousConfig;
use crate::user::User;

/// The `anonymous` authenticator's user.
pub fn anonymous_user(c: &AnonymousConfig) -> Result<Arc<User>, String> {
    if c.identity.is_empty() || HeaderValue::from_str(&c.identity).is_err() {
        return Err(format!(
            "identity {:?} must be non-empty visible ASCII (it is forwarded in a header)",
            c.identity
        ));
    }
    Ok(Arc::new(User {
        identity: c.identity.clone(),
        display_name: c.display_name.clone().unwrap_or_else(|| c.identity.clone()),
        permissions: c.permissions.clone(),
        roles: c.roles.clone(),
        attributes: c.attributes.clone(),
        ..User::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn anonymous_user_defaults_display_name() {
        let c = AnonymousConfig {
            identity: "anonymous".into(),
            display_name: None,
            permissions: vec![],
            roles: vec!["public".into()],
            attributes: Map::new(),
        };
        let u = anonymous_user(&c).unwrap();
        assert_eq!(u.display_name, "anonymous");
        assert_eq!(u.roles, ["public"]);
        let bad = AnonymousConfig {
            identity: String::new(),
            ..c
        };
        assert!(anonymous_user(&bad).is_err());
    }
}
