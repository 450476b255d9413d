//! Values templated from the authenticated user: `{user.identity}`, `{user.display_name}`,
//! `{user.permissions}`, `{user.roles}`, `{user.attributes.KEY}`.
//!
//! Templates are parsed once, when the policy loads; rendering is a walk over pre-parsed pieces.
//! A string that is exactly one placeholder renders to the placeholder's JSON value (so
//! `"{user.permissions}"` is a list); inside a longer string a placeholder must render to a
//! string, number or boolean. `{{` and `}}` are literal braces.

use serde_json::{Map, Value};

use crate::user::User;

/// A user field a template can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `{user.identity}`
    Identity,
    /// `{user.display_name}`
    DisplayName,
    /// `{user.permissions}` (a list)
    Permissions,
    /// `{user.roles}` (a list)
    Roles,
    /// `{user.attributes.KEY}`
    Attribute(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A parsed string template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrTemplate {
    pieces: Vec<Piece>,
}

/// A JSON value whose strings may hold templates.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    /// A value with no placeholder anywhere.
    Literal(Value),
    /// A string with at least one placeholder.
    Str(StrTemplate),
    /// An array with a templated element.
    Array(Vec<ValueTemplate>),
    /// An object with a templated value.
    Object(Vec<(String, ValueTemplate)>),
}

impl StrTemplate {
    /// Parse a string; errors name the offending placeholder.
    pub fn parse(s: &str) -> Result<StrTemplate, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if matches!(chars.peek(), Some((_, '{'))) => {
                    chars.next();
                    lit.push('{');
                }
                '}' if matches!(chars.peek(), Some((_, '}'))) => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = s.get(i + 1..).unwrap_or("");
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed placeholder in template {s:?}"))?;
                    let name = rest.get(..end).unwrap_or("");
                    let var = parse_var(name)?;
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Var(var));
                    // Skip the placeholder's characters.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => return Err(format!("unmatched '}}' in template {s:?} (write '}}}}')")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        let is_list = |p: &Piece| matches!(p, Piece::Var(Var::Permissions | Var::Roles));
        if pieces.len() > 1 && pieces.iter().any(is_list) {
            return Err(format!(
                "{s:?}: a list placeholder must be the whole string, not part of it"
            ));
        }
        Ok(StrTemplate { pieces })
    }

    /// Whether the template is a list placeholder (`{user.roles}`, `{user.permissions}`).
    pub fn is_list(&self) -> bool {
        matches!(
            self.pieces.as_slice(),
            [Piece::Var(Var::Permissions | Var::Roles)]
        )
    }

    /// Whether the string has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Lit(_)))
    }

    /// Render against a user.
    pub fn render(&self, user: &User) -> Result<Value, String> {
        if let [Piece::Var(v)] = self.pieces.as_slice() {
            return var_value(v, user);
        }
        let mut out = String::new();
        self.render_into(user, &mut out)?;
        Ok(Value::String(out))
    }

    /// Render against a user as text, appending to `out`, with no intermediate value: what
    /// [`StrTemplate::render`] gives, a template that is one placeholder of a list or an object
    /// written as JSON.
    pub fn render_into(&self, user: &User, out: &mut String) -> Result<(), String> {
        let whole = self.pieces.len() == 1;
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(Var::Identity) => out.push_str(&user.identity),
                Piece::Var(Var::DisplayName) => out.push_str(&user.display_name),
                Piece::Var(v @ Var::Attribute(k)) => match user.attributes.get(k) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                    Some(v) if whole => out.push_str(&v.to_string()),
                    Some(other) => return Err(not_in_text(v, other)),
                    None => return Err(format!("user {:?} has no attribute {k:?}", user.identity)),
                },
                Piece::Var(v @ (Var::Permissions | Var::Roles)) => match var_value(v, user)? {
                    list if whole => out.push_str(&list.to_string()),
                    list => return Err(not_in_text(v, &list)),
                },
            }
        }
        Ok(())
    }
}

fn not_in_text(v: &Var, value: &Value) -> String {
    format!(
        "placeholder {} is {} and cannot be part of a string",
        var_name(v),
        kind(value)
    )
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_var(name: &str) -> Result<Var, String> {
    match name {
        "user.identity" => Ok(Var::Identity),
        "user.display_name" => Ok(Var::DisplayName),
        "user.permissions" => Ok(Var::Permissions),
        "user.roles" => Ok(Var::Roles),
        n => match n.strip_prefix("user.attributes.") {
            Some(k) if !k.is_empty() => Ok(Var::Attribute(k.to_string())),
            _ => Err(format!(
                "unknown placeholder {{{n}}} (known: user.identity, user.display_name, \
                 user.permissions, user.roles, user.attributes.KEY)"
            )),
        },
    }
}

fn var_name(v: &Var) -> String {
    match v {
        Var::Identity => "{user.identity}".into(),
        Var::DisplayName => "{user.display_name}".into(),
        Var::Permissions => "{user.permissions}".into(),
        Var::Roles => "{user.roles}".into(),
        Var::Attribute(k) => format!("{{user.attributes.{k}}}"),
    }
}

fn var_value(v: &Var, user: &User) -> Result<Value, String> {
    Ok(match v {
        Var::Identity => Value::String(user.identity.clone()),
        Var::DisplayName => Value::String(user.display_name.clone()),
        Var::Permissions => Value::Array(
            user.permissions
                .iter()
                .cloned()
                .map(Value::String)
                .collect(),
        ),
        Var::Roles => Value::Array(user.roles.iter().cloned().map(Value::String).collect()),
        Var::Attribute(k) => user
            .attributes
            .get(k)
            .cloned()
            .ok_or_else(|| format!("user {:?} has no attribute {k:?}", user.identity))?,
    })
}

impl ValueTemplate {
    /// Compile a JSON value, parsing every string as a template.
    pub fn compile(v: &Value) -> Result<ValueTemplate, String> {
        Ok(match v {
            Value::String(s) => {
                let t = StrTemplate::parse(s)?;
                if t.is_literal() {
                    // Keep the unescaped text ("{{" -> "{").
                    match t.pieces.as_slice() {
                        [] => ValueTemplate::Literal(Value::String(String::new())),
                        [Piece::Lit(l)] => ValueTemplate::Literal(Value::String(l.clone())),
                        _ => ValueTemplate::Str(t),
                    }
                } else {
                    ValueTemplate::Str(t)
                }
            }
            Value::Array(items) => {
                let items = items
                    .iter()
                    .map(ValueTemplate::compile)
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|i| matches!(i, ValueTemplate::Literal(_))) {
                    ValueTemplate::Literal(v.clone())
                } else {
                    ValueTemplate::Array(items)
                }
            }
            Value::Object(m) => {
                let mut fields = Vec::with_capacity(m.len());
                for (k, x) in m {
                    fields.push((k.clone(), ValueTemplate::compile(x)?));
                }
                if fields
                    .iter()
                    .all(|(_, i)| matches!(i, ValueTemplate::Literal(_)))
                {
                    ValueTemplate::Literal(v.clone())
                } else {
                    ValueTemplate::Object(fields)
                }
            }
            other => ValueTemplate::Literal(other.clone()),
        })
    }

    /// Render against a user.
    pub fn render(&self, user: &User) -> Result<Value, String> {
        Ok(match self {
            ValueTemplate::Literal(v) => v.clone(),
            ValueTemplate::Str(t) => t.render(user)?,
            ValueTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(user))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTemplate::Object(fields) => {
                let mut m = Map::new();
                for (k, t) in fields {
                    m.insert(k.clone(), t.render(user)?);
                }
                Value::Object(m)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alice() -> User {
        User {
            identity: "alice".into(),
            display_name: "Alice".into(),
            permissions: vec!["threads:create".into()],
            roles: vec!["admin".into()],
            attributes: json!({"org": "acme", "level": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..User::default()
        }
    }

    fn render(s: Value) -> Result<Value, String> {
        ValueTemplate::compile(&s)?.render(&alice())
    }

    #[test]
    fn identity_placeholder_renders_identity() {
        assert_eq!(render(json!("{user.identity}")), Ok(json!("alice")));
    }

    #[test]
    fn display_name_and_attribute_interpolate_in_text() {
        assert_eq!(
            render(json!(
                "{user.display_name}@{user.attributes.org}/{user.attributes.level}"
            )),
            Ok(json!("Alice@acme/3"))
        );
    }

    #[test]
    fn whole_string_list_placeholder_renders_a_list() {
        assert_eq!(
            render(json!("{user.permissions}")),
            Ok(json!(["threads:create"]))
        );
        assert_eq!(render(json!("{user.roles}")), Ok(json!(["admin"])));
    }

    #[test]
    fn render_into_writes_what_render_gives_as_text() {
        let mut user = alice();
        user.attributes.insert("team".into(), json!({"id": 7}));
        user.attributes.insert("none".into(), Value::Null);
        for t in [
            "{user.identity}",
            "k:{user.identity}",
            "{user.display_name}/{user.attributes.org}",
            "{user.attributes.level}",
            "lvl-{user.attributes.level}",
            "{user.attributes.team}",
            "{user.attributes.none}",
            "{user.roles}",
            "{{lit}}",
            "x-{user.attributes.team}",
            "x-{user.attributes.missing}",
            "{user.attributes.missing}",
        ] {
            let parsed = StrTemplate::parse(t).unwrap();
            let want = parsed.render(&user).map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            });
            let mut got = String::from("pre:");
            let got = parsed.render_into(&user, &mut got).map(|()| got);
            assert_eq!(got, want.map(|w| format!("pre:{w}")), "{t}");
        }
    }

    #[test]
    fn list_placeholder_inside_text_is_a_load_error() {
        assert!(ValueTemplate::compile(&json!("x-{user.roles}")).is_err());
    }

    #[test]
    fn unknown_placeholder_is_a_load_error() {
        let e = ValueTemplate::compile(&json!("{user.email}")).unwrap_err();
        assert!(e.contains("unknown placeholder {user.email}"), "{e}");
    }

    #[test]
    fn unclosed_placeholder_is_a_load_error() {
        assert!(ValueTemplate::compile(&json!("{user.identity")).is_err());
        assert!(ValueTemplate::compile(&json!("a}b")).is_err());
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(render(json!("{{x}}")), Ok(json!("{x}")));
    }

    #[test]
    fn nested_structures_render() {
        assert_eq!(
            render(json!({"p": ["{user.identity}", "shared"], "n": 1})),
            Ok(json!({"p": ["alice", "shared"], "n": 1}))
        );
    }

    #[test]
    fn missing_attribute_fails_rendering() {
        let e = render(json!("{user.attributes.team}")).unwrap_err();
        assert!(e.contains("no attribute \"team\""), "{e}");
    }

    #[test]
    fn non_ascii_text_survives() {
        assert_eq!(render(json!("é-{user.identity}-ü")), Ok(json!("é-alice-ü")));
    }
}
