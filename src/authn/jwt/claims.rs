//! Claims: paths into a token's payload ([`ClaimPath`]) and the mapping of claims to the
//! [`User`] ([`ClaimMap`]).

use super::*;

/// A path to a claim: object keys from the payload's root (a number also indexes a list).
///
/// Syntax (see [`ClaimPathConfig`]): `a.b.c`; a string containing `://` is one key (namespaced
/// URL claims); `/a/b` is a JSON pointer (`~1` is `/`, `~0` is `~`); a YAML list gives the
/// segments verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    segments: Vec<String>,
    shown: String,
}

impl ClaimPath {
    /// Parse a configured path.
    pub fn parse(c: &ClaimPathConfig) -> Result<ClaimPath, String> {
        let (segments, shown) = match c {
            ClaimPathConfig::Path(s) if s.starts_with('/') => (
                s[1..]
                    .split('/')
                    .map(|p| p.replace("~1", "/").replace("~0", "~"))
                    .collect::<Vec<_>>(),
                s.clone(),
            ),
            ClaimPathConfig::Path(s) if s.contains("://") => (vec![s.clone()], s.clone()),
            ClaimPathConfig::Path(s) => (s.split('.').map(str::to_string).collect(), s.clone()),
            ClaimPathConfig::Segments(v) => (v.clone(), format!("{v:?}")),
        };
        if segments.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!("claim path {shown:?} has an empty segment"));
        }
        Ok(ClaimPath { segments, shown })
    }

    /// A top-level claim.
    pub fn top(name: &str) -> ClaimPath {
        ClaimPath {
            segments: vec![name.to_string()],
            shown: name.to_string(),
        }
    }

    /// The value at this path.
    pub fn get<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut cur = claims.get(first)?;
        for s in rest {
            cur = match cur {
                Value::Object(m) => m.get(s)?,
                Value::Array(a) => a.get(s.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// How claims become the [`User`].
#[derive(Debug, Clone)]
pub struct ClaimMap {
    identity: ClaimPath,
    display_name: Option<ClaimPath>,
    permissions: Option<ClaimPath>,
    roles: Option<ClaimPath>,
    attributes: Vec<(String, ClaimPath)>,
}

fn as_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl ClaimMap {
    /// From the `claims` section (defaults: identity `sub`, nothing else).
    pub fn new(c: Option<&crate::authn::jwt::config::ClaimsConfig>) -> Result<ClaimMap, String> {
        let path = |p: &Option<ClaimPathConfig>, what: &str| -> Result<Option<ClaimPath>, String> {
            p.as_ref()
                .map(|p| ClaimPath::parse(p).map_err(|e| format!("claims.{what}: {e}")))
                .transpose()
        };
        let Some(c) = c else {
            return Ok(ClaimMap {
                identity: ClaimPath::top("sub"),
                display_name: None,
                permissions: None,
                roles: None,
                attributes: Vec::new(),
            });
        };
        let mut attributes = Vec::with_capacity(c.attributes.len());
        for (name, p) in &c.attributes {
            let p = ClaimPath::parse(p).map_err(|e| format!("claims.attributes.{name}: {e}"))?;
            attributes.push((name.clone(), p));
        }
        Ok(ClaimMap {
            identity: path(&c.identity, "identity")?.unwrap_or_else(|| ClaimPath::top("sub")),
            display_name: path(&c.display_name, "display_name")?,
            permissions: path(&c.permissions, "permissions")?,
            roles: path(&c.roles, "roles")?,
            attributes,
        })
    }

    /// The user of a verified payload.
    pub fn user(&self, claims: &Map<String, Value>) -> Result<User, JwtError> {
        let no_identity = || JwtError::NoIdentity(self.identity.to_string());
        let identity = match self.identity.get(claims) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(no_identity()),
        };
        if identity.is_empty() || HeaderValue::from_str(&identity).is_err() {
            return Err(no_identity());
        }
        let display_name = self
            .display_name
            .as_ref()
            .and_then(|p| p.get(claims))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| identity.clone(), str::to_string);
        let mut attributes = Map::new();
        for (name, p) in &self.attributes {
            if let Some(v) = p.get(claims) {
                attributes.insert(name.clone(), v.clone());
            }
        }
        Ok(User {
            identity,
            display_name,
            permissions: as_list(self.permissions.as_ref().and_then(|p| p.get(claims))),
            roles: as_list(self.roles.as_ref().and_then(|p| p.get(claims))),
            attributes,
            ..User::default()
        })
    }
}
